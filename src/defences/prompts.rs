//! VPT (lambda = 0) and RVPT (lambda > 0): deep prompts trained on the k shots with CE + lambda FR,
//! checkpointed atomically after every epoch.

use super::DefenceContext;
use crate::error::{Error, Result};
use crate::model::Clip;
use crate::train::rvpt::{
    checkpoint::FORMAT, fit, CheckpointMeta, DeepPrompts, EpochLog, FitState, PromptCheckpoint,
};
use candle_core::Tensor;
use std::path::Path;

/// Trains prompts on `model` (class text embeddings `text`, checkpoint sha256 `base_sha256`)
/// with FR weight `lambda`; writes the checkpoint to `file`.
pub fn train(
    model: &Clip,
    text: &Tensor,
    ctx: &DefenceContext,
    base_sha256: &str,
    lambda: f64,
    file: &Path,
) -> Result<(DeepPrompts, Vec<EpochLog>)> {
    let mut cfg = ctx.rvpt.clone();
    cfg.loss.lambda = lambda;
    let v = &model.config().vision_config;
    let blocks = cfg.blocks.resolve(v.num_hidden_layers)?;
    let prompts = DeepPrompts::init(
        blocks.clone(),
        cfg.length,
        v.hidden_size,
        cfg.seed,
        ctx.dtype,
        &ctx.device,
    )?;
    let state = FitState {
        momentum: vec![None; prompts.depth()],
        prompts,
        logs: vec![],
    };
    let config = serde_json::to_value(&cfg).map_err(|e| Error::Invalid(format!("config: {e}")))?;
    let first_block = blocks.start;
    let mut save = |st: &FitState| {
        let meta = CheckpointMeta {
            format: FORMAT.into(),
            config: config.clone(),
            base_sha256: base_sha256.to_string(),
            seed: cfg.seed,
            epoch: st.logs.len(),
            first_block,
            metrics: serde_json::to_value(&st.logs)
                .map_err(|e| Error::Invalid(format!("logs: {e}")))?,
        };
        PromptCheckpoint {
            prompts: st.prompts.clone(),
            momentum: st.momentum.clone(),
            meta,
        }
        .save(file)
    };
    let use_cache = !cfg.augment;
    let state = fit(
        model,
        text,
        ctx.samples,
        &cfg,
        state,
        use_cache,
        ctx.show_progress,
        &mut save,
    )?;
    Ok((state.prompts, state.logs))
}
