//! VPT (lambda = 0) and RVPT (lambda > 0): deep prompts trained on the k shots with CE + lambda FR,
//! checkpointed atomically after every epoch.

use super::{DefenceContext, Outputs};
use crate::error::{Error, Result};
use crate::model::Clip;
use crate::train::rvpt::{
    checkpoint::FORMAT, fit, CheckpointMeta, DeepPrompts, EpochLog, FitState, PromptCheckpoint,
};
use candle_core::Tensor;
use std::path::Path;

/// Trains prompts on `model` (class text embeddings `text`, checkpoint sha256 `base_sha256`)
/// with FR weight `lambda`; writes the checkpoint to `out.prompts_file`, recording the method's
/// configuration `out.config` (a checkpoint is resumed only under the same).
pub fn train(
    model: &Clip,
    text: &Tensor,
    ctx: &DefenceContext,
    base_sha256: &str,
    lambda: f64,
    out: &Outputs,
) -> Result<(DeepPrompts, Vec<EpochLog>)> {
    let mut cfg = ctx.rvpt.clone();
    cfg.loss.lambda = lambda;
    let v = &model.config().vision_config;
    let blocks = cfg.blocks.resolve(v.num_hidden_layers)?;
    let (file, config) = (out.prompts_file.as_path(), &out.config);
    let state = if ctx.resume && file.exists() {
        resume(file, config, base_sha256, ctx)?
    } else {
        let prompts = DeepPrompts::init(
            blocks.clone(),
            cfg.length,
            v.hidden_size,
            cfg.seed,
            &ctx.device,
        )?;
        FitState::new(prompts)
    };
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
        ctx.progress,
        &mut save,
    )?;
    Ok((state.prompts, state.logs))
}

/// The training state of an unfinished (or finished) checkpoint, if it was made with `config`
/// on the same weights; refused with the differences named otherwise.
fn resume(
    file: &Path,
    config: &serde_json::Value,
    base_sha256: &str,
    ctx: &DefenceContext,
) -> Result<FitState> {
    let ck = PromptCheckpoint::load(file, &ctx.device)?;
    let refuse = |why: String| Error::OutConflict {
        out: file.to_path_buf(),
        reason: format!("this checkpoint cannot be resumed: {why}"),
        differences: Vec::new(),
    };
    if ck.meta.base_sha256 != base_sha256 {
        return Err(refuse(format!(
            "it was trained on weights with sha256 {}, these have {base_sha256}",
            ck.meta.base_sha256
        )));
    }
    let diff = crate::report::json_differences(&ck.meta.config, config);
    if !diff.is_empty() {
        return Err(Error::OutConflict {
            out: file.to_path_buf(),
            reason: "this checkpoint cannot be resumed: it was trained with other settings".into(),
            differences: diff,
        });
    }
    let logs: Vec<EpochLog> = serde_json::from_value(ck.meta.metrics.clone())
        .map_err(|e| refuse(format!("its epoch logs do not read ({e})")))?;
    if logs.len() != ck.meta.epoch {
        return Err(refuse(format!(
            "it records {} epochs but logs {}",
            ck.meta.epoch,
            logs.len()
        )));
    }
    ctx.progress.note(|| {
        format!(
            "resuming {} at epoch {} of {}",
            file.display(),
            logs.len(),
            ctx.rvpt.epochs
        )
    });
    Ok(FitState {
        prompts: ck.prompts,
        momentum: ck.momentum,
        logs,
    })
}
