//! `rvpt info`: what some weights are, without running them.

use super::{print_json, ModelArgs};
use crate::model::parameter_counts;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let weights = crate::weights::resolve(&args.model.weights)?;
    let ckpt = crate::engine::read_checkpoint(&weights)?;
    let counts = parameter_counts(&ckpt.config)?;
    if args.json {
        return print_json(&serde_json::json!({
            "source": weights.source,
            "layout": ckpt.layout,
            "config": ckpt.config,
            "config_source": ckpt.config_source,
            "activation_assumed": ckpt.config_source.activation_assumed(),
            "parameters": counts,
            "files": weights.files,
            "provenance": crate::report::Provenance::now().with_weights(
                crate::engine::WeightsUsed::new(&weights, ckpt.layout, ckpt.config_source, &ckpt.config),
            ),
        }));
    }
    let (v, t) = (&ckpt.config.vision_config, &ckpt.config.text_config);
    println!("source      {}", weights.source);
    println!("layout      {}", ckpt.layout);
    println!("config      {}", ckpt.config_source);
    let activation = |a: crate::model::Activation| match a {
        crate::model::Activation::QuickGelu => "quick_gelu",
        crate::model::Activation::Gelu => "gelu",
    };
    if ckpt.config_source.activation_assumed() {
        println!(
            "activation  {} (assumed: {})",
            activation(v.hidden_act),
            crate::model::ACTIVATION_ASSUMED
        );
    } else {
        println!(
            "activation  {} (stated by the config)",
            activation(v.hidden_act)
        );
    }
    let p = &ckpt.config.preprocess;
    println!("normalise   mean {:?}, std {:?}", p.mean, p.std);
    println!(
        "vision      {}px, patch {}, width {}, mlp {}, {} blocks, {} heads",
        v.image_size,
        v.patch_size,
        v.hidden_size,
        v.intermediate_size,
        v.num_hidden_layers,
        v.num_attention_heads
    );
    println!(
        "text        context {}, vocab {}, width {}, {} blocks, {} heads",
        t.max_position_embeddings,
        t.vocab_size,
        t.hidden_size,
        t.num_hidden_layers,
        t.num_attention_heads
    );
    println!("embedding   {}", ckpt.config.projection_dim);
    println!(
        "parameters  {} (vision {}, text {})",
        counts.total, counts.vision, counts.text
    );
    for f in &weights.files {
        let check = match &f.expected_sha256 {
            Some(_) => "verified",
            None => "no pinned digest",
        };
        println!("{:<11} {}  sha256 {} ({check})", f.role, f.path, f.sha256);
    }
    Ok(())
}
