//! The main job: for each backdoored model, run every defence of the plan (none, VPT, RVPT,
//! Linear Probe, CleanCLIP and their combinations, see `defences`) on a few clean shots and
//! measure CA, ASR and PR of each through the same evaluation pass. `cargo run --example
//! defend` and `rvpt defend` both run this.
//!
//! `plan` holds every setting and checks them before anything is created; `run_config` is one
//! method's resolved configuration, whose key decides reuse; `resume` owns the output folder
//! (a lock, and what an earlier run finished); `case` runs one model through the methods;
//! `output` writes `report.json`, the tables and the plots as each result comes in.

mod case;
mod output;
mod plan;
mod resume;
mod run_config;

pub use case::{
    defend_case, select_shots, Case, CaseResult, DefendSettings, MethodResult, TransferResult,
};
pub use output::{plots, table, DefendReport};
pub use plan::{toy_cases, DefendPlan, Models, Prepared};
pub use resume::{previous_results, OutLock};
pub use run_config::{
    DataId, EvalConfig, FolderId, RunConfig, ShotsConfig, WeightsKey, WeightsModel,
};

use crate::attacks::Perturbation;
use crate::error::Result;
use crate::report::Provenance;

/// Runs the defence and writes the report; prints tables (or the report as JSON).
pub fn run(plan: DefendPlan, json: bool) -> Result<DefendReport> {
    let Prepared {
        plan,
        cases,
        weights,
        mut settings,
        toy,
    } = plan.check()?;
    let out = plan.out.clone();
    let _lock = OutLock::acquire(&out)?;
    let earlier = previous_results(&out, plan.restart)?;
    if toy {
        let (train, test) = crate::toy::lab::ensure_splits(&out, plan.shots.max(16))?;
        settings.train_dir = train;
        settings.test_dir = test;
    }
    let mut report = DefendReport {
        command: "defend".into(),
        provenance: Provenance::now().ran_on(&plan.device, &plan.dtype),
        settings: serde_json::to_value(&plan)
            .map_err(|e| crate::Error::Invalid(format!("plan: {e}")))?,
        cases: Vec::new(),
    };
    let base_perturbations = settings.perturbations.clone();
    for (case, weights) in cases.iter().zip(weights) {
        let mut perturbations = base_perturbations.clone();
        perturbations.push(Perturbation::parse(&case.trigger)?);
        settings.perturbations = perturbations;
        let before = earlier.iter().find(|c| c.case.name == case.name);
        settings
            .progress
            .note(|| format!("defending {} ({})", case.name, case.weights));
        let mut write_partial = |partial: &CaseResult| -> Result<()> {
            let mut r = report.clone();
            r.cases.push(partial.clone());
            r.write(&out).map(|_| ())
        };
        let r = defend_case(case, weights, &settings, before, &mut write_partial)?;
        if !json {
            println!("{}", table(&r));
        }
        report.cases.push(r);
    }
    let written = report.write(&out)?;
    if json {
        crate::report::print_json(&report)?;
    } else {
        println!("report: {}", out.join("report.json").display());
        for p in written {
            println!("plot:   {}", p.display());
        }
    }
    Ok(report)
}
