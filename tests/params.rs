//! The model code's parameter list for the full ViT-B/32 config, and the config implied by
//! OpenAI-layout shapes.

mod common;

use candle_core::{DType, Device, Tensor};
use rvpt::model::{openai, parameter_counts, ClipConfig};
use std::collections::HashMap;

#[derive(serde::Deserialize)]
struct Counts {
    total: usize,
    vision: usize,
    text: usize,
}

#[test]
fn vit_b32_parameter_count_equals_transformers() {
    let want: Counts = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("vit_b32_params.json")).unwrap(),
    )
    .unwrap();
    let got = parameter_counts(&ClipConfig::vit_base_patch32()).unwrap();
    println!("ViT-B/32: {got:?}");
    assert_eq!(got.total, want.total);
    assert_eq!(got.vision, want.vision);
    assert_eq!(got.text, want.text);
    assert_eq!(got.total, 151_277_313);
}

#[test]
fn openai_shapes_imply_vit_b32() {
    // Shapes of OpenAI's ViT-B-32 state dict (no data: broadcast zeros).
    let z = |shape: &[usize]| {
        Tensor::zeros((), DType::F32, &Device::Cpu)
            .unwrap()
            .broadcast_as(shape)
            .unwrap()
    };
    let mut sd: HashMap<String, Tensor> = HashMap::new();
    sd.insert("visual.conv1.weight".into(), z(&[768, 3, 32, 32]));
    sd.insert("visual.positional_embedding".into(), z(&[50, 768]));
    sd.insert("token_embedding.weight".into(), z(&[49408, 512]));
    sd.insert("positional_embedding".into(), z(&[77, 512]));
    sd.insert("text_projection".into(), z(&[512, 512]));
    for i in 0..12 {
        sd.insert(
            format!("visual.transformer.resblocks.{i}.mlp.c_fc.weight"),
            z(&[3072, 768]),
        );
        sd.insert(
            format!("transformer.resblocks.{i}.mlp.c_fc.weight"),
            z(&[2048, 512]),
        );
    }
    let cfg = openai::infer_config(&sd, std::path::Path::new("ViT-B-32.pt")).unwrap();
    assert_eq!(cfg, ClipConfig::vit_base_patch32());
}
