//! The engine against transformers on the tiny random CLIP (tests/reference/make_fixtures.py):
//! every output within 1e-4 in f32, from the HF layout, the OpenAI `.pt` and OpenAI safetensors.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixture, load_tensors, max_abs_diff};
use rvpt::model::{load_clip, Clip, ClipConfig};

const TOL: f32 = 1e-4;

fn tiny_config() -> ClipConfig {
    ClipConfig::from_file(&fixture("tiny/config.json")).unwrap()
}

/// Checks every golden output; returns the worst error per quantity for the log.
fn check_model(model: &Clip, label: &str) {
    let r = load_tensors("parity.safetensors");
    let pixels = &r["pixel_values"];
    let ids = &r["input_ids"];
    let mut report = Vec::new();
    let mut check = |name: &str, ours: &Tensor| {
        let err = max_abs_diff(ours, &r[name]);
        report.push(format!("{name} {err:.2e}"));
        assert!(err <= TOL, "{label}: {name} max abs error {err} > {TOL}");
    };
    let features = model.image_features(pixels).unwrap();
    check("image_features", &features);
    let image_embeds = model.project_image(&features).unwrap();
    check("image_embeds", &image_embeds);
    check("text_features", &model.text.forward(ids).unwrap());
    let text_embeds = model.text_embeds(ids).unwrap();
    check("text_embeds", &text_embeds);
    check(
        "logits_per_image",
        &model.logits(&image_embeds, &text_embeds).unwrap(),
    );
    let vis = Tensor::stack(&model.vision.hidden_states(pixels).unwrap(), 0).unwrap();
    check("vision_hidden_states", &vis);
    let mut text_states = model.text.hidden_states(ids).unwrap();
    let last = text_states.pop().unwrap();
    check("text_last_hidden_state", &last);
    check(
        "text_hidden_states",
        &Tensor::stack(&text_states, 0).unwrap(),
    );
    println!("{label}: max abs errors: {}", report.join(", "));
}

#[test]
fn hf_layout_matches_transformers() {
    let model = load_clip(
        &fixture("tiny/model.safetensors"),
        Some(tiny_config()),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    check_model(&model, "hf safetensors");
}

#[test]
fn openai_pt_layout_matches_transformers() {
    // {"state_dict": {"module.visual.conv1.weight": …}} in f16, as CleanCLIP-style checkpoints are.
    let model = load_clip(
        &fixture("tiny-openai/model.pt"),
        Some(tiny_config()),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    check_model(&model, "openai .pt");
}

#[test]
fn openai_safetensors_layout_matches_transformers() {
    // The same OpenAI-named tensors re-saved as safetensors (a container change only).
    let tensors = rvpt::model::checkpoint::read_tensors(&fixture("tiny-openai/model.pt")).unwrap();
    assert!(tensors.contains_key("visual.transformer.resblocks.0.attn.in_proj_weight"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let model = load_clip(&path, Some(tiny_config()), DType::F32, &Device::Cpu).unwrap();
    check_model(&model, "openai safetensors");
}

#[test]
fn candle_transformers_clip_agrees_on_image_embeddings() {
    // A second, independent implementation of the same model as a sanity anchor.
    use candle_transformers::models::clip as ct;
    let cfg = tiny_config();
    let v = &cfg.vision_config;
    let t = &cfg.text_config;
    let ct_cfg = ct::ClipConfig {
        text_config: ct::text_model::ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: ct::text_model::Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: cfg.projection_dim,
        },
        vision_config: ct::vision_model::ClipVisionConfig {
            embed_dim: v.hidden_size,
            activation: ct::text_model::Activation::QuickGelu,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            projection_dim: cfg.projection_dim,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
        },
        logit_scale_init_value: 2.6592,
        image_size: v.image_size,
    };
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[fixture("tiny/model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let theirs = ct::ClipModel::new(vb, &ct_cfg).unwrap();
    let r = load_tensors("parity.safetensors");
    let ours = load_clip(
        &fixture("tiny/model.safetensors"),
        Some(cfg.clone()),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let a = ours.image_embeds(&r["pixel_values"]).unwrap();
    let b = theirs.get_image_features(&r["pixel_values"]).unwrap();
    let err = max_abs_diff(&a, &b);
    println!("candle-transformers vs rvpt image embeds: {err:.2e}");
    assert!(err <= TOL);
}

#[test]
fn half_precision_stays_close() {
    let r = load_tensors("parity.safetensors");
    for dtype in [DType::F16, DType::BF16] {
        let model = load_clip(
            &fixture("tiny/model.safetensors"),
            Some(tiny_config()),
            dtype,
            &Device::Cpu,
        )
        .unwrap();
        let px = r["pixel_values"].to_dtype(dtype).unwrap();
        let ours = model.image_embeds(&px).unwrap();
        let err = max_abs_diff(&ours, &r["image_embeds"]);
        let scale = r["image_embeds"]
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("{dtype:?}: image embeds max abs error {err:.2e} (largest value {scale:.2})");
        assert!(err <= 0.05 * scale, "{dtype:?} drifted: {err}");
    }
}
