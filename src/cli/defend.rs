//! `rvpt defend` (and `cargo run --example defend`): its flags, read into the library's
//! [`DefendPlan`]. Which flags change results is said in `flags`.

use crate::defend::{DefendPlan, Models};
use crate::text::Templates;
use crate::train::rvpt::{PromptPlacement, RepelAt, ShotSampler};
use std::path::PathBuf;

/// Command-line options of `rvpt defend` and `cargo run --example defend`.
#[derive(clap::Args, Debug, Clone)]
pub struct DefendArgs {
    /// Backdoored weights (entry, repo id, directory or file); default: the three embedded toy models
    #[arg(long, requires_all = ["data", "test_data", "trigger", "target"])]
    pub weights: Option<String>,
    /// Training image folder (one sub-folder per class); k shots per class are drawn from it
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test image folder with the same classes; more folders after a comma are measured too,
    /// each with its own classes (cross-dataset, cross-domain: tune once, evaluate on several)
    #[arg(long, value_delimiter = ',')]
    pub test_data: Vec<PathBuf>,
    /// Class names file for both folders
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    /// The backdoor's trigger spec (for ASR and PR)
    #[arg(long)]
    pub trigger: Option<String>,
    /// The backdoor's target class
    #[arg(long)]
    pub target: Option<String>,
    /// woTC: drop the target class's shots (an emerging target class the defender has no
    /// images of); its text stays among the classes
    #[arg(long)]
    pub without_target_class: bool,
    /// Class text template: single ("a photo of a {}."), openai80, pets ("a photo of a {}, a
    /// type of pet."), or any text with one {} for the class name
    #[arg(long, default_value = "single", value_parser = Templates::parse)]
    pub template: Templates,
    /// More class templates to report CA and ASR under, `|`-separated (each as --template), so
    /// that a backdoor bound to one sentence shows: [default: the toy cases "a {} in the
    /// picture|A photo of a {} in the middle."; a given model "openai80|a {} in the picture.|an
    /// image showing a {}."]; an empty string for none
    #[arg(long)]
    pub asr_templates: Option<String>,
    /// Prompt training epochs (≥ 1)
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Clean training images per class (≥ 1)
    #[arg(long, default_value_t = 16)]
    pub shots: usize,
    /// Prompt training batch size (≥ 1)
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Prompt learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine schedule)
    #[arg(long, default_value_t = 0.002)]
    pub lr: f64,
    /// Defences to compare, each measured by the same evaluation: none, vpt, rvpt,
    /// linear-probe, or stages joined by `+` (rvpt+linear-probe: a linear head on the prompted
    /// model's embeddings)
    #[arg(
        long,
        default_value = "none,linear-probe,vpt,rvpt",
        value_delimiter = ','
    )]
    pub methods: Vec<String>,
    /// FR weights of RVPT, one prompt set each (several: methods rvpt-<lambda>); 0 adds VPT
    #[arg(
        long,
        default_value = "2",
        value_delimiter = ',',
        num_args = 1..,
        allow_negative_numbers = true
    )]
    pub lambda: Vec<f64>,
    /// CleanCLIP: learning rate of AdamW (the paper's 5e-6 is for real CLIP; 3e-6 for WaNet)
    #[arg(long, default_value_t = 5e-6)]
    pub cleanclip_lr: f64,
    /// CleanCLIP: epochs (batch 64)
    #[arg(long, default_value_t = 10)]
    pub cleanclip_epochs: usize,
    /// CleanCLIP: a CSV of clean `path,caption` pairs to fine-tune on [default: the k shots,
    /// captioned by the training folder's captions.csv or "a photo of a {class}."]
    #[arg(long)]
    pub cleanclip_pairs: Option<PathBuf>,
    /// Linear Probe: epochs of SGD (lr 0.01, momentum 0.9, batch 32, constant lr, as in the paper)
    #[arg(long, default_value_t = 40)]
    pub probe_epochs: usize,
    /// Which embedded toy backdoors to repair: names, or `all` [default: badnet-own,
    /// blended-own (planted the paper's way: captions naming the target in many phrasings);
    /// wanet-own (the same, ASR 1 point short of 90%); badnet, blended (toy2: bound to one
    /// sentence); badnet-toy3, blended-toy3, wanet-toy3; the hard-poisoned badnet-hard,
    /// blended-hard, wanet-hard and badnet-late6 on request]
    #[arg(long, value_delimiter = ',', conflicts_with = "weights")]
    pub cases: Vec<String>,
    /// Prompt tokens per block
    #[arg(long, default_value_t = 50)]
    pub prompt_length: usize,
    /// Which blocks get prompts: half (the last half of the model's blocks: 6 of ViT-B/32's
    /// 12, as the paper), N (the last N) or a range counted from the input, a..b (b excluded)
    /// or a..=b; above the last prompted block the prompt outputs are carried along
    #[arg(
        long = "prompt-blocks",
        alias = "prompted-blocks",
        default_value = "half"
    )]
    pub prompt_blocks: PromptPlacement,
    /// coop (random resized crop + flip) or none (enables the frozen-prefix cache)
    #[arg(long, default_value = "coop", value_parser = ["coop", "none"])]
    pub augment: String,
    /// The smallest area share of --augment coop's random crops, in (0, 1] [default: 0.08 for
    /// a given model, as CoOp and torchvision; 0.5 for the toy cases, whose 32 px images lose
    /// too much to smaller crops (measured: docs/results.md)]
    #[arg(long)]
    pub crop_scale: Option<f64>,
    /// FR measure: cosine, l1 or l2
    #[arg(long, default_value = "cosine")]
    pub fr: String,
    /// FR on the [CLS] token at every prompted block (the same as --repel-blocks prompted)
    #[arg(long, conflicts_with = "repel_blocks")]
    pub layerwise_fr: bool,
    /// Where FR repels the prompted encoder from the frozen one: final (the pooled feature),
    /// prompted (the [CLS] token after every prompted block), or the [CLS] token after the
    /// blocks given as a range a..b / a..=b or a list 6,8,10 (at or above the first prompted
    /// block), independent of --prompt-blocks
    #[arg(long, default_value = "final")]
    pub repel_blocks: RepelAt,
    /// Margin variant of FR: max(FR_i, margin)
    #[arg(long, allow_negative_numbers = true)]
    pub margin: Option<f64>,
    /// Seed of the shots, the prompts' initialisation and the batch order
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the trigger's randomness (fixed patterns, WaNet's warp) and of the perturbations
    /// at evaluation: the one the backdoor was planted with (the toy models': 7)
    #[arg(long, default_value_t = crate::toy::lab::TRIGGER_SEED)]
    pub trigger_seed: u64,
    /// How the shots are drawn: rvpt, or coop (Python's `random` as CoOp seeds it: the same
    /// shots as CoOp for the same --seed on a CoOp split file; CoOp's seeds are 1, 2, 3)
    #[arg(long, default_value = "rvpt")]
    pub sampler: ShotSampler,
    /// Perturbations for PR; the case's trigger is added
    #[arg(long, default_value = "noise:0.03,blur:3,flip")]
    pub perturb: String,
    /// cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where report.json, the plots and the prompt checkpoints go. A run started again on the
    /// same --out with the same settings keeps what the first one finished and resumes an
    /// unfinished prompt training from its checkpoint; another run using it is refused
    #[arg(long, default_value = "defend-report")]
    pub out: PathBuf,
    /// Start over in --out: ignore (and overwrite) an earlier run's results and checkpoints
    #[arg(long)]
    pub restart: bool,
    /// Print report.json on stdout instead of tables
    #[arg(long)]
    pub json: bool,
    /// Also measure where the trigger's push comes from (`rvpt anatomy`) before and after each
    /// defence: the heads' and MLPs' push towards the target and the share of the prompted blocks
    #[arg(long)]
    pub anatomy: bool,
}

impl DefendArgs {
    /// The plan these flags ask for.
    pub fn plan(&self) -> DefendPlan {
        let models = match &self.weights {
            Some(weights) => Models::Given {
                weights: weights.clone(),
                train: self.data.clone(),
                test: self.test_data.first().cloned(),
                trigger: self.trigger.clone(),
                target: self.target.clone(),
            },
            None => Models::Toy(self.cases.clone()),
        };
        // With a given model the first test folder is its test set, the others transfer sets;
        // the toy cases make their own test set.
        let transfer = match &self.weights {
            Some(_) => self.test_data.iter().skip(1).cloned().collect(),
            None => self.test_data.clone(),
        };
        DefendPlan {
            models,
            transfer,
            classnames: self.classnames.clone(),
            templates: self.template.clone(),
            asr_templates: self.asr_templates.clone(),
            without_target_class: self.without_target_class,
            methods: self.methods.clone(),
            lambdas: self.lambda.clone(),
            epochs: self.epochs,
            shots: self.shots,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            sampler: self.sampler,
            prompt_length: self.prompt_length,
            prompt_blocks: self.prompt_blocks,
            augment: self.augment == "coop",
            crop_scale: self.crop_scale,
            repulsion: self.fr.clone(),
            repel: if self.layerwise_fr {
                RepelAt::PromptedBlocks
            } else {
                self.repel_blocks.clone()
            },
            margin: self.margin,
            cleanclip_lr: self.cleanclip_lr,
            cleanclip_epochs: self.cleanclip_epochs,
            cleanclip_pairs: self.cleanclip_pairs.clone(),
            probe_epochs: self.probe_epochs,
            perturbations: self.perturb.clone(),
            trigger_seed: self.trigger_seed,
            anatomy: self.anatomy,
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            out: self.out.clone(),
            restart: self.restart,
            progress: !self.json,
        }
    }
}

pub fn run(args: DefendArgs) -> crate::Result<()> {
    crate::defend::run(args.plan(), args.json).map(|_| ())
}
