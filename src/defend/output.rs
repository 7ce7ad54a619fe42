//! What a run leaves: `report.json` (settings, provenance and every result, rewritten as each
//! result comes in), the tables on stdout and the PNG plots.

use super::case::{CaseResult, MethodResult};
use crate::error::Result;
use crate::metrics::Rate;
use crate::report::Provenance;
use std::path::{Path, PathBuf};

/// `report.json` of `rvpt defend` (and `--json` on stdout): one object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DefendReport {
    pub command: String,
    pub provenance: Provenance,
    /// Every setting that shapes the results (a resumed run must match them).
    pub settings: serde_json::Value,
    pub cases: Vec<CaseResult>,
}

impl DefendReport {
    /// Dates the report, writes `report.json` (atomically) and redraws the plots from what is
    /// there.
    pub fn write(&mut self, dir: &Path) -> Result<Vec<PathBuf>> {
        self.provenance = self.provenance.clone().stamped();
        crate::report::write_json(&dir.join("report.json"), self)?;
        plots(&self.cases, dir)
    }
}

/// CA and ASR of each zero-shot method under the other report templates: a backdoor bound to
/// one sentence shows as an ASR that falls away from it.
fn by_template_table(r: &CaseResult, w: usize) -> String {
    let Some(first) = r.results.iter().find(|m| !m.by_template.is_empty()) else {
        return String::new();
    };
    let mut out = String::from("  CA % / ASR % under other class templates:\n");
    out += &format!("  {:<w$}", "method");
    for t in &first.by_template {
        out += &format!(" | {}", t.template);
    }
    out += "\n";
    for m in r.results.iter().filter(|m| !m.by_template.is_empty()) {
        out += &format!("  {:<w$}", m.method);
        for t in &m.by_template {
            let cell = format!(
                "{:.1} / {:.1}",
                100.0 * t.clean_accuracy.value,
                100.0 * t.attack_success_rate.value
            );
            out += &format!(" | {cell:<width$}", width = t.template.len());
        }
        out.truncate(out.trim_end().len());
        out += "\n";
    }
    out
}

/// The before/after table, one row per method.
pub fn table(r: &CaseResult) -> String {
    let mut out = format!(
        "{} ({} → {}), {} shots/class, {} test images\n",
        r.case.name, r.case.trigger, r.case.target, r.shots, r.test_images
    );
    let prs: Vec<String> = r
        .results
        .first()
        .map(|m| {
            m.resistivity
                .iter()
                .map(|p| p.perturbation.clone())
                .collect()
        })
        .unwrap_or_default();
    let w = r
        .results
        .iter()
        .map(|m| m.method.len())
        .max()
        .unwrap_or(0)
        .max(8);
    out += &format!("  {:<w$} {:>7} {:>7}", "method", "CA %", "ASR %");
    for p in &prs {
        out += &format!(" {:>12}", format!("PR {p}"));
    }
    let with_anatomy = r.results.iter().any(|m| m.anatomy.is_some());
    if with_anatomy {
        out += &format!(" {:>7} {:>9}  top components", "push", "in blocks");
    }
    out += "\n";
    for m in &r.results {
        out += &format!(
            "  {:<w$} {:>7.1} {:>7.1}",
            m.method,
            100.0 * m.clean_accuracy.value,
            100.0 * m.attack_success_rate.value
        );
        for p in &m.resistivity {
            out += &format!(" {:>12.3}", p.resistivity.pr);
        }
        if let Some(a) = &m.anatomy {
            let top: Vec<String> = a
                .top
                .iter()
                .take(3)
                .map(|c| format!("{} {:+.2}", c.name, c.push))
                .collect();
            out += &format!(
                " {:>7.2} {:>8.0}%  {}",
                a.written_push,
                100.0 * a.prompted_share,
                top.join(", ")
            );
        }
        out += "\n";
    }
    out += &by_template_table(r, w);
    out += &transfer_table(r, w);
    out += &verdict(&r.results);
    out
}

/// The paper's bar for a repair: ASR at most 5% under every template, CA within 2 points.
pub const REPAIRED_ASR: f64 = 0.05;
pub const REPAIRED_CA_COST: f64 = 0.02;

/// One line: did RVPT repair the case? Its worst ASR over every reported template against the
/// undefended model's, and its CA cost; empty without both a `none` and an RVPT row.
pub fn verdict(results: &[MethodResult]) -> String {
    let none = results.iter().find(|m| m.method == "none");
    let rvpt = results
        .iter()
        .find(|m| m.method == "rvpt" || m.method.starts_with("rvpt-"));
    let (Some(none), Some(rvpt)) = (none, rvpt) else {
        return String::new();
    };
    // (ASR, template) of the worst template: the CE one first, then the others.
    fn worst(m: &MethodResult) -> (f64, &str) {
        m.by_template
            .iter()
            .map(|t| (t.attack_success_rate.value, t.template.as_str()))
            .fold((m.attack_success_rate.value, "the CE template"), |a, b| {
                if b.0 > a.0 {
                    b
                } else {
                    a
                }
            })
    }
    let (before, _) = worst(none);
    let (after, at) = worst(rvpt);
    let templates = 1 + rvpt.by_template.len();
    let cost = none.clean_accuracy.value - rvpt.clean_accuracy.value;
    let repaired = after <= REPAIRED_ASR && cost <= REPAIRED_CA_COST;
    format!(
        "  verdict: {} {} (the paper's bar: ASR ≤ {:.0}% under every template, CA within {:.0} \
         points): worst ASR over {templates} templates {:.1}% → {:.1}% ({at}), CA {:.1}% → {:.1}%\n",
        rvpt.method,
        if repaired { "repaired it" } else { "did not repair it" },
        100.0 * REPAIRED_ASR,
        100.0 * REPAIRED_CA_COST,
        100.0 * before,
        100.0 * after,
        100.0 * none.clean_accuracy.value,
        100.0 * rvpt.clean_accuracy.value,
    )
}

/// CA and ASR on every transfer test set.
fn transfer_table(r: &CaseResult, w: usize) -> String {
    let mut out = String::new();
    let transfers = r.results.first().map_or(0, |m| m.transfer.len());
    for k in 0..transfers {
        let t0 = &r.results[0].transfer[k];
        out += &format!(
            "  on {} ({} classes, {} images): CA % / ASR %\n",
            t0.test_data.display(),
            t0.classes,
            t0.test_images
        );
        for m in &r.results {
            let t = &m.transfer[k];
            let pct = |r: &Option<Rate>| {
                r.as_ref()
                    .map_or("-".into(), |r| format!("{:.1}", 100.0 * r.value))
            };
            out += &format!(
                "  {:<w$} {:>7} {:>7}  {}\n",
                m.method,
                pct(&t.clean_accuracy),
                pct(&t.attack_success_rate),
                t.note.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// Loss curves, CA/ASR bars (with their 95% intervals) and PR per perturbation, as PNGs in
/// `dir`. Drawn from whatever results exist (a case may be part-way through its methods).
pub fn plots(results: &[CaseResult], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    written.extend(loss_plot(results, dir)?);
    written.extend(rate_plots(results, dir)?);
    for r in results {
        written.extend(pr_plot(r, dir)?);
    }
    Ok(written)
}

/// The training loss of every method that trained, one curve each (`loss.png`).
fn loss_plot(results: &[CaseResult], dir: &Path) -> Result<Option<PathBuf>> {
    let mut curves = Vec::new();
    for r in results {
        for m in r.results.iter().filter(|m| !m.epochs.is_empty()) {
            let pts = m
                .epochs
                .iter()
                .map(|e| (e.epoch as f64 + 1.0, e.loss))
                .collect();
            curves.push((format!("{} {}", r.case.name, m.method), pts));
        }
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let p = dir.join("loss.png");
    crate::report::line_plot(
        &p,
        "training loss (CE + lambda FR)",
        "epoch",
        "loss",
        &curves,
        true,
    )?;
    Ok(Some(p))
}

/// CA and ASR of every method per case, with their intervals (`ca.png`, `asr.png`).
fn rate_plots(results: &[CaseResult], dir: &Path) -> Result<Vec<PathBuf>> {
    use crate::report::{bar_plot, BarSeries};
    // Every method any case has, in first-seen order.
    let mut methods: Vec<String> = Vec::new();
    for m in results.iter().flat_map(|r| &r.results) {
        if !methods.contains(&m.method) {
            methods.push(m.method.clone());
        }
    }
    let mut written = Vec::new();
    if methods.is_empty() {
        return Ok(written);
    }
    let cats: Vec<String> = results.iter().map(|r| r.case.name.clone()).collect();
    let find = |r: &CaseResult, name: &str| r.results.iter().find(|m| m.method == name).cloned();
    for (what, title, pick) in [
        (
            "ca",
            "clean accuracy (%), 95% intervals",
            (|m: &MethodResult| m.clean_accuracy) as fn(&MethodResult) -> Rate,
        ),
        (
            "asr",
            "attack success rate (%), 95% intervals",
            |m: &MethodResult| m.attack_success_rate,
        ),
    ] {
        let series: Vec<BarSeries> = methods
            .iter()
            .map(|name| {
                let rates: Vec<Option<Rate>> = results
                    .iter()
                    .map(|r| find(r, name).map(|m| pick(&m)))
                    .collect();
                BarSeries {
                    name: name.clone(),
                    values: rates
                        .iter()
                        .map(|r| r.map_or(f64::NAN, |r| 100.0 * r.value))
                        .collect(),
                    intervals: Some(
                        rates
                            .iter()
                            .map(|r| {
                                r.map_or((f64::NAN, f64::NAN), |r| {
                                    (100.0 * r.ci95.0, 100.0 * r.ci95.1)
                                })
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        let p = dir.join(format!("{what}.png"));
        bar_plot(&p, title, "case", "%", &cats, &series, 100.0)?;
        written.push(p);
    }
    Ok(written)
}

/// PR per perturbation of every method of a case (`pr-<case>.png`).
fn pr_plot(r: &CaseResult, dir: &Path) -> Result<Option<PathBuf>> {
    use crate::report::{bar_plot, BarSeries};
    let Some(first) = r.results.first() else {
        return Ok(None);
    };
    let perts: Vec<String> = first
        .resistivity
        .iter()
        .map(|p| p.perturbation.clone())
        .collect();
    let series: Vec<BarSeries> = r
        .results
        .iter()
        .map(|m| BarSeries {
            name: m.method.clone(),
            values: m.resistivity.iter().map(|p| p.resistivity.pr).collect(),
            intervals: None,
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|s| s.values.iter())
        .filter(|v| v.is_finite())
        .fold(1.0f64, |a, &b| a.max(b))
        * 1.1;
    let p = dir.join(format!("pr-{}.png", r.case.name));
    bar_plot(
        &p,
        &format!("PR per perturbation: {}", r.case.name),
        "perturbation",
        "PR",
        &perts,
        &series,
        max,
    )?;
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero-shot row with CA and ASR (%) under the CE template and under "other".
    fn row(method: &str, ca: u32, asr: u32, other_asr: u32) -> MethodResult {
        let rate = |hits: u32, total: u32| {
            serde_json::json!({"hits": hits, "total": total,
                "value": hits as f64 / total as f64, "ci95": [0.0, 1.0]})
        };
        serde_json::from_value(serde_json::json!({
            "method": method, "lambda": null, "classifier": "zero-shot",
            "clean_accuracy": rate(ca, 100), "attack_success_rate": rate(asr, 100),
            "resistivity": [], "epochs": [], "train_seconds": 0.0, "prompts_file": null,
            "model_dir": null, "transfer": [], "anatomy": null,
            "by_template": [{"template": "other", "clean_accuracy": rate(ca, 100),
                "attack_success_rate": rate(other_asr, 100)}],
            "config": {}, "key": ""
        }))
        .unwrap()
    }

    #[test]
    fn the_verdict_judges_the_worst_template_and_the_ca_cost() {
        let none = row("none", 99, 95, 97);
        let repaired = verdict(&[none.clone(), row("rvpt", 98, 2, 4)]);
        assert!(repaired.contains("rvpt repaired it"), "{repaired}");
        assert!(repaired.contains("97.0% → 4.0% (other)"), "{repaired}");
        // Low ASR under the CE template alone is not a repair.
        let bound = verdict(&[none.clone(), row("rvpt", 98, 2, 40)]);
        assert!(bound.contains("did not repair it"), "{bound}");
        assert!(bound.contains("→ 40.0% (other)"), "{bound}");
        // Nor is one that costs more than 2 CA points.
        let costly = verdict(&[none.clone(), row("rvpt", 96, 1, 1)]);
        assert!(costly.contains("did not repair it"), "{costly}");
        assert!(verdict(&[none]).is_empty());
    }
}
