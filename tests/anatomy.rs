//! `rvpt anatomy`: the decomposition sums to the real embedding (plain and prompted), and on
//! hand-edited models whose answer is known, the push lands on the components that can carry it.

use candle_core::{DType, Device, Tensor};
use rvpt::anatomy::{decompose, trigger_push, Component, PushSpec};
use rvpt::attacks::Trigger;
use rvpt::data::{ImageFolder, Loader, Transform};
use rvpt::eval::Classifier;
use rvpt::model::{Checkpoint, Clip};
use rvpt::text::Templates;
use rvpt::toy::ToyWorld;
use rvpt::train::rvpt::{DeepPrompts, PromptedEncoder};

fn toy_checkpoint(name: &str) -> Checkpoint {
    let weights = rvpt::weights::resolve(name).unwrap();
    rvpt::engine::read_checkpoint(&weights).unwrap()
}

/// Normalised pixels of `n` toy images.
fn toy_pixels(n: u64) -> Tensor {
    let world = ToyWorld::new(32, 0).unwrap();
    let images: Vec<Tensor> = (0..n)
        .map(|i| rvpt::image::to_unit_tensor(&world.sample(1_000_000 + i).image, &Device::Cpu))
        .collect::<rvpt::Result<_>>()
        .unwrap();
    rvpt::image::normalize(&Tensor::stack(&images, 0).unwrap()).unwrap()
}

/// max |a - b| / max |b|.
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    (diff / scale).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn parts_sum_to_the_image_embedding() {
    let model: Clip = toy_checkpoint("toy-badnet")
        .into_model(DType::F32, &Device::Cpu)
        .unwrap();
    let pixels = toy_pixels(20);
    let d = decompose(
        &model.vision,
        model.visual_projection_weight(),
        &pixels,
        None,
    )
    .unwrap();
    let cfg = &model.config().vision_config;
    assert_eq!(
        d.parts.dims(),
        &[
            20,
            2 + cfg.num_hidden_layers * (cfg.num_attention_heads + 1),
            model.config().projection_dim
        ]
    );
    let real = model.image_embeds(&pixels).unwrap();
    let same_pass = relative_error(&d.embeds, &real);
    let summed = relative_error(&d.parts.sum(1).unwrap(), &real);
    println!("embedding vs model: {same_pass:.2e}; Σ parts vs model: {summed:.2e}");
    assert!(same_pass <= 1e-5, "{same_pass}");
    assert!(summed <= 1e-4, "{summed}");
}

#[test]
fn prompted_parts_sum_to_the_prompted_embedding() {
    let model: Clip = toy_checkpoint("toy-badnet")
        .into_model(DType::F32, &Device::Cpu)
        .unwrap();
    let pixels = toy_pixels(12);
    // The last 6 blocks (the default), and blocks 2..5 with their outputs carried to the top.
    for blocks in [6..12, 2..5] {
        let prompts = DeepPrompts::init(blocks.clone(), 10, 64, 3, &Device::Cpu).unwrap();
        // Larger than the N(0, 0.02) initialisation, so that the prompts matter.
        let scaled: Vec<candle_core::Var> = prompts
            .vars
            .iter()
            .map(|v| candle_core::Var::from_tensor(&(v.as_tensor() * 50.0).unwrap()).unwrap())
            .collect();
        let prompts = DeepPrompts {
            vars: scaled,
            first_block: blocks.start,
        };
        let d = decompose(
            &model.vision,
            model.visual_projection_weight(),
            &pixels,
            Some(&prompts),
        )
        .unwrap();
        let encoder = PromptedEncoder::new(&model.vision, &prompts).unwrap();
        use rvpt::eval::ImageEncoder;
        let real = model
            .project_image(&encoder.features(&pixels).unwrap())
            .unwrap();
        let plain = model.image_embeds(&pixels).unwrap();
        assert!(
            relative_error(&plain, &real) > 1e-2,
            "{blocks:?}: the prompts should change the embedding"
        );
        let summed = relative_error(&d.parts.sum(1).unwrap(), &real);
        println!("prompts in {blocks:?}: Σ parts vs prompted encoder: {summed:.2e}");
        assert!(relative_error(&d.embeds, &real) <= 1e-5, "{blocks:?}");
        assert!(summed <= 1e-4, "{blocks:?}: {summed}");
    }
}

/// toy-clean with every head's output projection and every MLP's second layer zeroed, except
/// the heads and MLPs in `keep`: only they write into the residual stream.
fn edited_toy(keep: &[Component]) -> Clip {
    let mut ckpt = toy_checkpoint("toy-clean");
    let cfg = ckpt.config.vision_config.clone();
    let d = cfg.hidden_size / cfg.num_attention_heads;
    for layer in 0..cfg.num_hidden_layers {
        let p = format!("vision_model.encoder.layers.{layer}");
        let w = ckpt.tensors[&format!("{p}.self_attn.out_proj.weight")]
            .to_dtype(DType::F32)
            .unwrap();
        // Columns of the kept heads survive.
        let mask: Vec<f32> = (0..cfg.hidden_size)
            .map(|i| {
                let kept = keep.contains(&Component::Head { layer, head: i / d });
                if kept {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::new(mask.as_slice(), &Device::Cpu).unwrap();
        let zero = |t: &Tensor| t.zeros_like().unwrap();
        ckpt.tensors.insert(
            format!("{p}.self_attn.out_proj.weight"),
            w.broadcast_mul(&mask).unwrap(),
        );
        let b = &ckpt.tensors[&format!("{p}.self_attn.out_proj.bias")];
        ckpt.tensors
            .insert(format!("{p}.self_attn.out_proj.bias"), zero(b));
        if !keep.contains(&Component::Mlp { layer }) {
            for name in ["weight", "bias"] {
                let key = format!("{p}.mlp.fc2.{name}");
                let z = zero(&ckpt.tensors[&key]);
                ckpt.tensors.insert(key, z);
            }
        }
    }
    ckpt.into_model(DType::F32, &Device::Cpu).unwrap()
}

/// Pushes of a BadNet trigger towards "heart" on `model`, per component name.
fn pushes(model: &Clip, dir: &std::path::Path) -> Vec<(Component, f64)> {
    let folder = ImageFolder::open(dir, None).unwrap();
    let loader = Loader::new(
        folder.samples().to_vec(),
        Transform::eval(32),
        50,
        &Device::Cpu,
    )
    .unwrap();
    let tok = rvpt::toy::tokenizer(rvpt::toy::CONTEXT_LENGTH).unwrap();
    let zs = Classifier::new(
        model,
        model,
        &tok,
        folder.classes(),
        Templates::Single,
        &Device::Cpu,
    )
    .unwrap();
    let trigger = Trigger::parse("badnet:fixed,size=4").unwrap();
    let spec = PushSpec {
        trigger: &trigger,
        target: folder.class_index("heart").unwrap(),
        seed: 7,
        prompted_blocks: rvpt::train::rvpt::PromptPlacement::Last(6),
        top: 5,
    };
    let r = trigger_push(&zs, &loader, &spec, None, rvpt::progress::Progress::Silent).unwrap();
    assert_eq!(r.images, 90, "images outside the target class");
    let total: f64 = r.components.iter().map(|c| c.push).sum();
    assert!((total - r.total_push).abs() < 1e-9);
    let shares: f64 = r.layers.iter().map(|l| l.share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "layer shares sum to {shares}");
    r.components.iter().map(|c| (c.component, c.push)).collect()
}

fn assert_only(pushes: &[(Component, f64)], carriers: &[Component]) {
    for (c, p) in pushes {
        match c {
            Component::Input | Component::FinalNormBias => {}
            // Silent components write exact zeros; a carrier's push is far above rounding.
            c if carriers.contains(c) => {
                assert!(
                    p.abs() > 1e-5,
                    "{} should carry the trigger, push {p}",
                    c.name()
                )
            }
            c => assert!(*p == 0.0, "{} writes nothing, yet push {p}", c.name()),
        }
    }
}

#[test]
fn a_single_head_carries_the_whole_push() {
    let dir = tempfile::tempdir().unwrap();
    ToyWorld::new(32, 0)
        .unwrap()
        .write_image_folder(dir.path(), 1_000_000, 10)
        .unwrap();
    let head = Component::Head { layer: 11, head: 2 };
    let p = pushes(&edited_toy(&[head]), dir.path());
    assert_only(&p, &[head]);
    // A head and an MLP several blocks above it: the MLP reads what the head wrote into [CLS].
    let (early, mlp) = (
        Component::Head { layer: 0, head: 1 },
        Component::Mlp { layer: 9 },
    );
    let p = pushes(&edited_toy(&[early, mlp]), dir.path());
    assert_only(&p, &[early, mlp]);
}
