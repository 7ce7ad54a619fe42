//! The main job: for each backdoored model, run every defence of `--methods` (none, VPT, RVPT,
//! Linear Probe, CleanCLIP and their combinations, see `defences`) on a few clean shots and
//! measure CA, ASR and PR of each through the same evaluation pass. `cargo run --example
//! defend` and `rvpt defend` both run this.
//!
//! `args` checks the command line before anything is created; `resume` owns the `--out` folder
//! (a lock, and what an earlier run finished); `case` runs one model through the methods;
//! `output` writes `report.json`, the tables and the plots as each result comes in.

mod args;
mod case;
mod output;
mod resume;

pub use args::{plan, toy_cases, DefendArgs, Plan};
pub use case::{
    defend_case, select_shots, Case, CaseResult, DefendSettings, MethodResult, TransferResult,
};
pub use output::{plots, table, DefendReport};
pub use resume::{previous_results, OutLock};

use crate::attacks::Perturbation;
use crate::error::Result;
use crate::report::Provenance;

/// Runs the defence and writes the report; prints tables (or the report as JSON).
pub fn run(a: &DefendArgs) -> Result<DefendReport> {
    let Plan {
        cases,
        weights,
        mut settings,
        toy,
        fingerprint,
    } = plan(a)?;
    let _lock = OutLock::acquire(&a.out)?;
    let earlier = previous_results(&a.out, &fingerprint, a.restart)?;
    if toy {
        let (train, test) = crate::toy::lab::ensure_splits(&a.out, a.shots.max(16))?;
        settings.train_dir = train;
        settings.test_dir = test;
    }
    let mut report = DefendReport {
        command: "defend".into(),
        provenance: Provenance::now().ran_on(&a.device, &a.dtype),
        settings: fingerprint,
        cases: Vec::new(),
    };
    let base_perturbations = settings.perturbations.clone();
    for (case, weights) in cases.iter().zip(weights) {
        let mut perturbations = base_perturbations.clone();
        perturbations.push(Perturbation::parse(&case.trigger)?);
        settings.perturbations = perturbations;
        let before = earlier.iter().find(|c| c.case == *case);
        if !a.json {
            eprintln!("defending {} ({})", case.name, case.weights);
        }
        let mut write_partial = |partial: &CaseResult| -> Result<()> {
            let mut r = report.clone();
            r.cases.push(partial.clone());
            r.write(&a.out).map(|_| ())
        };
        let r = defend_case(case, weights, &settings, before, &mut write_partial)?;
        if !a.json {
            println!("{}", table(&r));
        }
        report.cases.push(r);
    }
    let written = report.write(&a.out)?;
    if a.json {
        crate::report::print_json(&report)?;
    } else {
        println!("report: {}", a.out.join("report.json").display());
        for p in written {
            println!("plot:   {}", p.display());
        }
    }
    Ok(report)
}
