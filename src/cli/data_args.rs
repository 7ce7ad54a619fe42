//! Dataset options shared by `eval` and `pr`.

use crate::data::{ImageFolder, Loader, OnBadImage, Transform};
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct DataArgs {
    /// Class names file: one per line in folder order, or `folder<TAB>name` lines
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    /// Images per batch
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// What an unreadable image does: fail (named error) or skip (reported)
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip"])]
    pub on_bad_image: String,
    /// Evaluate a random sample of N images (drawn with --sample-seed from every class, not the
    /// first N in folder order)
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the --limit sample
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    /// Use the 80 OpenAI ImageNet templates instead of "a photo of a {}." (= --template openai80)
    #[arg(long, conflicts_with = "template")]
    pub openai_templates: bool,
    /// Class text template: single ("a photo of a {}."), openai80, pets ("a photo of a {}, a
    /// type of pet."), or any text with one {} for the class name
    #[arg(long, value_parser = crate::text::Templates::parse)]
    pub template: Option<crate::text::Templates>,
}

impl DataArgs {
    pub fn templates(&self) -> crate::text::Templates {
        match (&self.template, self.openai_templates) {
            (Some(t), _) => t.clone(),
            (None, true) => crate::text::Templates::OpenAi80,
            (None, false) => crate::text::Templates::Single,
        }
    }

    /// An image folder (one sub-folder per class) as a loader of `size` px images.
    pub fn open(&self, dir: &std::path::Path, size: u32) -> crate::Result<(ImageFolder, Loader)> {
        let folder = ImageFolder::open(dir, self.classnames.as_deref())?;
        let mut samples = folder.samples().to_vec();
        if let Some(n) = self.limit {
            samples = crate::data::random_subset(samples.len(), n, self.sample_seed)
                .into_iter()
                .map(|i| samples[i].clone())
                .collect();
        }
        let policy = if self.on_bad_image == "skip" {
            OnBadImage::Skip
        } else {
            OnBadImage::Fail
        };
        let loader = Loader::new(
            samples,
            Transform::eval(size),
            self.batch_size,
            &candle_core::Device::Cpu,
        )?
        .on_bad_image(policy);
        Ok((folder, loader))
    }

    /// What was evaluated, for `--json`: the image count, the classes present, and the sample.
    pub fn sample_json(&self, loader: &Loader) -> serde_json::Value {
        let mut classes: Vec<usize> = loader.samples().iter().map(|s| s.1).collect();
        classes.sort_unstable();
        classes.dedup();
        serde_json::json!({
            "images": loader.len(),
            "classes": classes.len(),
            "limit": self.limit,
            "sample_seed": self.limit.map(|_| self.sample_seed),
        })
    }
}

/// `--asr-templates`, for the commands that measure a backdoor (`eval`, `anatomy`).
#[derive(clap::Args, Clone)]
pub struct TemplateSetArgs {
    /// Also report CA and ASR under these class templates, `|`-separated (each as --template),
    /// e.g. "openai80|a {} in the picture.": a backdoor bound to one sentence shows as an ASR
    /// that falls under the others
    #[arg(long)]
    pub asr_templates: Option<String>,
}

impl TemplateSetArgs {
    /// CA and ASR under each template asked for, labelled.
    pub fn evaluate(
        &self,
        engine: &crate::engine::Engine,
        encoder: &dyn crate::eval::ImageEncoder,
        classes: &[String],
        loader: &crate::data::Loader,
        attack: Option<&crate::eval::Attack>,
        show: bool,
    ) -> crate::Result<Vec<(String, crate::eval::EvalReport)>> {
        let templates = match &self.asr_templates {
            Some(spec) => crate::text::parse_template_set(spec)?,
            None => return Ok(Vec::new()),
        };
        let reports = crate::eval::evaluate_under_templates(
            &engine.model,
            encoder,
            &engine.tokenizer,
            classes,
            &templates,
            loader,
            attack,
            crate::progress::Progress::shown(show),
        )?;
        Ok(reports.into_iter().map(|(t, r)| (t.label(), r)).collect())
    }

    /// The reports as `--json` gives them.
    pub fn json(reports: &[(String, crate::eval::EvalReport)]) -> serde_json::Value {
        reports
            .iter()
            .map(|(t, r)| {
                serde_json::json!({
                    "template": t,
                    "clean_accuracy": r.clean_accuracy,
                    "attack_success_rate": r.attack_success_rate,
                })
            })
            .collect()
    }

    /// One line per template.
    pub fn print(reports: &[(String, crate::eval::EvalReport)]) {
        for (t, r) in reports {
            let asr = r
                .attack_success_rate
                .as_ref()
                .map_or(String::new(), |a| format!(", ASR {}", a.display_percent()));
            println!(
                "  under \"{t}\": CA {}{asr}",
                r.clean_accuracy.display_percent()
            );
        }
    }
}
