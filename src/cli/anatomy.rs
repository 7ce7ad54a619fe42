//! `rvpt anatomy`: where a backdoor lives, on any CLIP.

use super::{
    data_args::{DataArgs, TemplateSetArgs},
    print_json, provenance, ModelArgs, PromptArgs, TRIGGER_HELP,
};
use crate::anatomy::{splice_test, trigger_push, AnatomyReport, PushSpec, SpliceRow};
use crate::attacks::Trigger;
use crate::eval::Attack;
use crate::metrics::AsrConvention;
use crate::train::rvpt::PromptPlacement;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptArgs,
    #[command(flatten)]
    data_args: DataArgs,
    #[command(flatten)]
    templates: TemplateSetArgs,
    /// Image folder: one sub-folder per class (the class names give the text embeddings)
    #[arg(long = "data", alias = "images")]
    data: PathBuf,
    #[arg(long, help = TRIGGER_HELP)]
    trigger: String,
    /// The attacker's target class (a class name of the folder)
    #[arg(long)]
    target: String,
    /// Seed of the trigger's randomness: the one it was planted with
    #[arg(long = "trigger-seed", alias = "seed", default_value_t = 7)]
    trigger_seed: u64,
    /// The blocks that count as "prompted" (where RVPT's prompts act) in the verdict: N (the
    /// last N), half (the last half) or a range a..b [default: those of --prompts, else the last half of the model's blocks]
    #[arg(long = "prompt-blocks", alias = "prompted-blocks")]
    prompt_blocks: Option<PromptPlacement>,
    /// How many top components to list
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Write a heat map (layer × head, plus an MLP column) of the pushes to this PNG
    #[arg(long)]
    png: Option<PathBuf>,
    /// The push at which the heat map's colours saturate [default: the largest]; give two runs
    /// one value to compare their maps (e.g. before and after a defence)
    #[arg(long, requires = "png")]
    png_saturate: Option<f64>,
    /// Clean weights with the same shape: also run the splice test (swap image-tower blocks
    /// between the two models, ASR per splice)
    #[arg(long)]
    reference: Option<String>,
    /// Blocks to splice at, comma-separated [default: a quarter, half and three quarters of the
    /// blocks]
    #[arg(long, value_delimiter = ',', requires = "reference")]
    splice_at: Option<Vec<usize>>,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let trigger = Trigger::parse(&args.trigger)?;
    let engine = args.model.load()?;
    engine.weights.check_trigger(&trigger, args.trigger_seed)?;
    let (folder, loader) = args.data_args.open(&args.data, engine.image_size())?;
    let prompts = args.prompts.load_prompts(&engine)?;
    let zs = engine.zero_shot(&engine.model, folder.classes(), args.data_args.templates())?;
    let spec = PushSpec {
        trigger: &trigger,
        target: folder.class_index(&args.target)?,
        seed: args.trigger_seed,
        prompted_blocks: match (args.prompt_blocks, &prompts) {
            (Some(p), _) => p,
            (None, Some(p)) => PromptPlacement::Range {
                start: p.blocks().start,
                end: p.blocks().end,
            },
            (None, None) => PromptPlacement::Half,
        },
        top: args.top,
    };
    let report = trigger_push(
        &zs,
        &loader,
        &spec,
        prompts.as_ref(),
        crate::progress::Progress::shown(!args.json),
    )?;
    let attack = Attack {
        trigger: &trigger,
        target: spec.target,
        seed: args.trigger_seed,
        convention: AsrConvention::ExcludeTarget,
    };
    let encoder = engine.encoder(prompts.as_ref())?;
    let by_template = args.templates.evaluate(
        &engine,
        encoder.as_ref(),
        folder.classes(),
        &loader,
        Some(&attack),
        !args.json,
    )?;
    if let Some(png) = &args.png {
        let name = match &args.prompts.prompts {
            Some(_) => format!("{} + prompts", args.model.weights),
            None => args.model.weights.clone(),
        };
        draw(png, &report, &name, args.png_saturate)?;
    }
    let splice = match &args.reference {
        Some(reference) => {
            let reference = crate::engine::Engine::load(reference, &engine.device, engine.dtype)?;
            let blocks = engine.model.config().vision_config.num_hidden_layers;
            let ks = args
                .splice_at
                .clone()
                .unwrap_or_else(|| vec![blocks / 4, blocks / 2, 3 * blocks / 4]);
            Some(splice_test(&zs, &reference.model, &ks, &loader, &attack)?)
        }
        None => None,
    };
    if args.json {
        return print_json(&serde_json::json!({
            "weights": engine.weights.source,
            "prompts": args.prompts.prompts,
            "images": args.data,
            "definition": "push = mean over images outside the target class of (part of the target logit on the triggered image - on the clean image); parts: direct contributions through the residual stream, the final layer norm linearised per image, and the projection; share = push / the heads' and MLPs' summed push",
            "anatomy": report,
            "splice": splice,
            "by_template": TemplateSetArgs::json(&by_template),
            "png": args.png,
            "provenance": provenance(Some(&engine)),
        }));
    }
    print_report(&report, splice.as_deref());
    TemplateSetArgs::print(&by_template);
    Ok(())
}

fn print_report(r: &AnatomyReport, splice: Option<&[SpliceRow]>) {
    println!(
        "trigger {} → {}: ASR {}, mean target-logit change {:+.3} ({:+.3} written by heads and MLPs)",
        r.trigger,
        r.target,
        r.attack_success_rate.display_percent(),
        r.total_push,
        r.written_push
    );
    let heads = r.layers.first().map_or(0, |l| l.heads.len());
    let head_cols: Vec<String> = (0..heads)
        .map(|h| format!("{:>7}", format!("H{h}")))
        .collect();
    println!(
        "{:>5} {} {:>7} {:>7} {:>6}",
        "block",
        head_cols.join(" "),
        "MLP",
        "sum",
        "share"
    );
    for l in &r.layers {
        let cells: Vec<String> = l.heads.iter().map(|v| format!("{v:>7.3}")).collect();
        println!(
            "{:>5} {} {:>7.3} {:>7.3} {:>5.0}%",
            l.layer,
            cells.join(" "),
            l.mlp,
            l.push,
            100.0 * l.share
        );
    }
    for c in r
        .components
        .iter()
        .filter(|c| c.component.layer().is_none())
    {
        println!("{:>16}: {:+.3} ({:.0}%)", c.name, c.push, 100.0 * c.share);
    }
    let top: Vec<String> = r
        .top
        .iter()
        .map(|c| format!("{} {:+.3}", c.name, c.push))
        .collect();
    println!("top: {}", top.join(", "));
    println!(
        "heads {:.0}%, MLPs {:.0}% of the push",
        100.0 * r.heads_share,
        100.0 * r.mlp_share
    );
    if let Some(rows) = splice {
        println!("splice test (text tower backdoored):");
        for s in rows {
            println!(
                "  backdoored {:<20} CA {:>5.1}%  ASR {}",
                s.backdoored_part,
                100.0 * s.clean_accuracy.value,
                s.attack_success_rate.display_percent()
            );
        }
    }
    println!("{}", r.verdict);
}

/// The heat map: one row per block, one column per head plus the MLP; prompted blocks framed.
fn draw(
    path: &std::path::Path,
    r: &AnatomyReport,
    name: &str,
    saturate: Option<f64>,
) -> crate::Result<()> {
    let heads = r.layers.first().map_or(0, |l| l.heads.len());
    let mut columns: Vec<String> = (0..heads).map(|h| format!("H{h}")).collect();
    columns.push("MLP".into());
    let rows: Vec<String> = r
        .layers
        .iter()
        .map(|l| format!("block {}", l.layer))
        .collect();
    let values: Vec<Vec<f64>> = r
        .layers
        .iter()
        .map(|l| l.heads.iter().copied().chain([l.mlp]).collect())
        .collect();
    let title = format!(
        "{name}: {} → {}, {:.0}% of the push in blocks {}–{}",
        r.trigger,
        r.target,
        100.0 * r.prompted_share,
        r.prompted_blocks.0,
        r.prompted_blocks.1 - 1
    );
    crate::report::heat_map(
        path,
        &title,
        &rows,
        &columns,
        &values,
        r.prompted_blocks.0..r.prompted_blocks.1,
        saturate,
    )
}
