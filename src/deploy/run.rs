//! One target's run as the report sees it: the plan, the mode, the report being built, and
//! the ONE helper that records a step's outcome ([`Run::record`]). Nothing here talks to the
//! target.

use std::time::Duration;

use tokio::time::Instant;

use super::{Mode, set_in_flight};
use crate::plan::TargetPlan;
use crate::report::{
    CertificateReport, Event, Reporter, Status, Step, StepReport, StepStatus, TargetReport,
};
use crate::ssh::ExecOutput;
use crate::ssh::quote::Script;

/// A step's result as step functions return it: its value and detail, or its error message.
pub(super) type StepResult<T> = Result<(T, Option<String>), String>;

/// How a target ended: its status, or its status and what went wrong.
pub(super) type Outcome = Result<Status, (Status, String)>;

/// A failure inside a step: what to say.
#[derive(Debug)]
pub(super) struct StepFailure {
    pub step: Step,
    pub message: String,
    /// Set when the step shared one remote command with another and the transport failed in
    /// it: which one was running is unknown, so messages name both (`preview and backup`).
    pub shared: Option<&'static str>,
}

impl StepFailure {
    pub fn new(step: Step, message: String) -> Self {
        Self {
            step,
            message,
            shared: None,
        }
    }

    /// The step (or steps) named in messages: `preview failed: …`.
    pub fn label(&self) -> &'static str {
        self.shared.unwrap_or(self.step.as_str())
    }

    /// `STEP failed: MESSAGE`.
    pub fn cause(&self) -> String {
        format!("{} failed: {}", self.label(), self.message)
    }
}

/// How cleanup closes the journal this run wrote: moved to `dest` (in its backup set), and
/// the set retired (renamed `.restored`, so `certctl rollback` passes over it) unless the run
/// ended `keep_set_when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenJournal {
    pub dest: String,
    pub set: String,
    pub keep_set_when: Option<Status>,
}

/// The tail of every error of a target whose live state was not touched.
pub(super) const UNTOUCHED: &str = "nothing live was changed";

pub(super) struct Run<'a> {
    pub plan: &'a TargetPlan,
    pub mode: Mode,
    pub force: bool,
    pub break_lock: bool,
    /// The first interrupt: it ends a verify of the new certificate in progress.
    pub stop: tokio_util::sync::CancellationToken,
    reporter: &'a dyn Reporter,
    pub report: TargetReport,
    /// A step that already ran inside another step's remote command (a dry-run's cleanup runs
    /// with its preview): its outcome and duration, reported when its turn comes.
    pub ran_early: Option<(Step, StepResult<()>, Duration)>,
    /// This run wrote its journal on the target (a change is under way): cleanup closes it,
    /// unless the rollback failed — then it stays for the next run to recover.
    pub journal: Option<OpenJournal>,
    /// Said by the verify step: the probe could not attribute what it saw to this target.
    pub verify_note: Option<String>,
    /// Temp paths beside live files this run may create (staged files, restore and link
    /// temps): cleanup removes them all.
    pub temps: Vec<String>,
    /// What the policy gate's probes saw served, moments ago, by certificate: inspect's
    /// "served before".
    pub served_at_gate: Option<Vec<Option<crate::probe::Served>>>,
}

/// A report with nothing in it yet: the target's names and the new certificate.
pub(super) fn blank_report(plan: &TargetPlan) -> TargetReport {
    let certificates = plan
        .certs
        .iter()
        .map(|c| CertificateReport {
            certificate: c.certificate.clone(),
            address: c.has_probe.then(|| c.probe.address.clone()),
            sni: c.has_probe.then(|| c.probe.sni.clone()),
            old_fingerprint: None,
            new_fingerprint: Some(c.material.leaf.fingerprint),
            served_fingerprint: None,
            probes: Vec::new(),
        })
        .collect();
    let mut report = TargetReport {
        name: plan.name.clone(),
        host: plan.ssh.host.clone(),
        connector: plan.connector.clone(),
        status: Status::Failed,
        old_fingerprint: None,
        new_fingerprint: None,
        served_fingerprint: None,
        files: Vec::new(),
        steps: Vec::new(),
        probes: Vec::new(),
        certificates,
        duration_ms: 0,
        error: None,
    };
    report.sync_first();
    report
}

impl<'a> Run<'a> {
    pub fn new(
        plan: &'a TargetPlan,
        options: &super::DeployOptions,
        reporter: &'a dyn Reporter,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        Run {
            stop,
            plan,
            mode: options.mode,
            force: options.force,
            break_lock: options.break_lock,
            reporter,
            report: blank_report(plan),
            ran_early: None,
            journal: None,
            verify_note: None,
            temps: plan
                .files
                .iter()
                .flat_map(|f| {
                    [
                        f.staged.clone(),
                        super::names::temp_beside(&f.path, &plan.run_id, "restore"),
                        super::names::temp_beside(&f.path, &plan.run_id, "link"),
                    ]
                })
                .collect(),
            served_at_gate: None,
        }
    }

    pub fn dry_run(&self) -> bool {
        self.mode == Mode::DryRun
    }

    pub fn begin(&self, step: Step) -> Instant {
        set_in_flight(&self.plan.name, Some(step));
        self.reporter.event(Event::StepStarted {
            target: self.plan.name.clone(),
            step,
        });
        Instant::now()
    }

    /// Records a step that ended: its status, how long it took and what it said.
    pub fn end(&mut self, step: Step, took: Duration, status: StepStatus, detail: Option<String>) {
        let report = StepReport {
            step,
            status,
            duration_ms: took.as_millis() as u64,
            detail,
        };
        self.reporter.event(Event::StepFinished {
            target: self.plan.name.clone(),
            step: report.clone(),
        });
        self.report.steps.push(report);
    }

    /// The one place a step's result becomes a report entry: `ok` with its detail, or `failed`
    /// with its message (and a [`StepFailure`] for the caller). The step must have begun.
    pub fn record<T>(
        &mut self,
        step: Step,
        took: Duration,
        result: StepResult<T>,
    ) -> Result<T, StepFailure> {
        match result {
            Ok((value, detail)) => {
                self.end(step, took, StepStatus::Ok, detail);
                Ok(value)
            }
            Err(message) => {
                self.end(step, took, StepStatus::Failed, Some(message.clone()));
                Err(StepFailure::new(step, message))
            }
        }
    }

    /// Begins `step`, runs `f` and records its outcome.
    pub async fn step<T>(
        &mut self,
        step: Step,
        f: impl std::future::Future<Output = StepResult<T>>,
    ) -> Result<T, StepFailure> {
        let t = self.begin(step);
        let result = f.await;
        self.record(step, t.elapsed(), result)
    }

    /// A step that is not done, and why (`skipped`).
    pub fn skip(&mut self, step: Step, why: String) {
        self.begin(step);
        self.end(step, Duration::ZERO, StepStatus::Skipped, Some(why));
    }

    /// A warning about this target that is not a step's outcome (`warning: TARGET: …`).
    pub fn warn(&self, message: String) {
        self.reporter.event(Event::Warning {
            target: Some(self.plan.name.clone()),
            message,
        });
    }

    /// A failure before anything live changed: `failed` (a dry-run: `would-fail`) with the
    /// step's message and the untouched tail.
    pub fn untouched(&self, failure: StepFailure) -> (Status, String) {
        let status = if self.dry_run() {
            Status::WouldFail
        } else {
            Status::Failed
        };
        (status, format!("{}; {UNTOUCHED}", failure.cause()))
    }

    /// Sets the target's final status and error from `outcome`.
    pub fn conclude(&mut self, outcome: Outcome) {
        (self.report.status, self.report.error) = match outcome {
            Ok(status) => (status, None),
            Err((status, error)) => (status, Some(error)),
        };
    }

    /// Runs a script that two steps share; `first` (begun at `t`) fails when the transport does,
    /// and the failure names both steps: which one was running is unknown.
    pub async fn exec_shared(
        &mut self,
        session: &crate::ssh::Session,
        s: &Script,
        first: Step,
        t: tokio::time::Instant,
        shared: &'static str,
    ) -> Result<ExecOutput, StepFailure> {
        self.exec_shared_stdin(session, s, &[], first, t, shared)
            .await
    }

    /// [`Run::exec_shared`] with `stdin` written to the script's standard input.
    pub async fn exec_shared_stdin(
        &mut self,
        session: &crate::ssh::Session,
        s: &Script,
        stdin: &[u8],
        first: Step,
        t: tokio::time::Instant,
        shared: &'static str,
    ) -> Result<ExecOutput, StepFailure> {
        let stdin = (!stdin.is_empty()).then_some(stdin);
        match session.exec_script(s, stdin).await {
            Ok(out) => Ok(out),
            Err(e) => {
                let mut failure = self
                    .record::<()>(first, t.elapsed(), Err(e.to_string()))
                    .expect_err("an error is recorded as a failure");
                failure.shared = Some(shared);
                Err(failure)
            }
        }
    }
}
