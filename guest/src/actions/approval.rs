//! The approval gate: a `run_workload` above a profile's
//! `requireApprovalAbove` limits is held as `PENDING_APPROVAL` (its script
//! rendered and kept for the operator to read, nothing sent to the cluster);
//! the operator decides outside the agent's reach (`cluster-slurm
//! approve|reject RUN`, read through the host's `approvals` import), and the
//! next `check_workload` of the run reports the decision — and, once
//! approved, submits the held request.

use super::submit::{apply_policy, minutes_text};
use super::{Tool, invalid};
use crate::config::{ApprovalRules, Profile};
use crate::header::Header;
use crate::host::{Decision, ToolError};
use crate::ledger::{
    APPROVAL_APPROVED, APPROVAL_PENDING, APPROVAL_REJECTED, Approval, RunRecord, iso_timestamp,
};
use crate::request::Request;
use crate::routing::Selection;
use serde_json::{Value, json};

use super::submit::Workload;

/// Which of `rules` the job `header` asks for more than.
pub(super) fn approval_reasons(rules: &ApprovalRules, header: &Header) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(max) = rules.gpus {
        let n = super::submit::gpus_requested(header);
        if n > max {
            reasons.push(format!("{n} GPUs (approval needed above {max})"));
        }
    }
    if let (Some(max), Some(time)) = (rules.time_minutes, header.time.as_deref())
        // No limit at all (UNLIMITED) is more than any limit.
        && header.time_minutes().is_none_or(|m| m > max)
    {
        reasons.push(format!(
            "time {time} (approval needed above {})",
            minutes_text(max)
        ));
    }
    if let (Some(max), Some(n)) = (rules.array_tasks, header.array_size())
        && n > max
    {
        reasons.push(format!(
            "an array of {n} tasks (approval needed above {max})"
        ));
    }
    if let (Some(max), Some(n)) = (rules.nodes, header.nodes)
        && n > max
    {
        reasons.push(format!("{n} nodes (approval needed above {max})"));
    }
    reasons
}

/// What the agent is told about a held run.
fn approval_json(a: &Approval) -> Value {
    json!({
        "state": a.state,
        "reasons": a.reasons,
        "requestedAt": a.requested_at,
        "decidedBy": a.decided_by,
        "decidedAt": a.decided_at,
        "note": a.note,
    })
}

fn how_to_decide(run_id: &str) -> String {
    format!(
        "An operator must decide: `cluster-slurm approve {run_id}` or `cluster-slurm reject {run_id}` on the machine that runs this tool. Call check_workload with this runId to see the decision; once approved, that call submits the job."
    )
}

impl Tool<'_> {
    /// The run `key` is held in, if a pending one exists (asking again
    /// must not queue the same request twice).
    fn pending_run(&mut self, key: &str) -> Result<Option<RunRecord>, ToolError> {
        let ledger = self.load_ledger()?;
        for id in ledger.runs.keys() {
            if let Ok(Some(run)) = ledger.get(id)
                && run
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.key == key && a.state == APPROVAL_PENDING)
            {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// Hold a `run_workload` that needs approval: record it (and its
    /// rendered script) in a run, send nothing to the cluster.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold_for_approval(
        &mut self,
        req: &Request,
        profile: &Profile,
        header: &Header,
        workload: &Workload,
        existing: Option<RunRecord>,
        key: &str,
        reasons: Vec<String>,
        selection: &Selection,
    ) -> Result<Value, ToolError> {
        if let Some(run) = self.pending_run(key)? {
            return Ok(self.held_answer(&run, selection, true));
        }
        // A decision covers one request: a run that held one never holds another.
        if let Some(run) = existing.as_ref()
            && let Some(held) = &run.approval
        {
            return Err(invalid(if held.key == key {
                // The same request, not pending in the ledger (which the
                // agent can edit): only the operator's decision counts.
                format!(
                    "run {} already holds this request (the ledger says {:?}); check_workload reports the operator's decision",
                    run.run_id, held.state
                )
            } else {
                format!(
                    "run {} already held another request for approval; a different request needs a new run (omit runId)",
                    run.run_id
                )
            }));
        }
        let mut run = match existing {
            Some(run) => run,
            None => {
                let id = self.choose_run_id(req.run_id.as_deref(), req.prefix.as_deref())?;
                self.new_run(profile, id)
            }
        };
        let script = self.render_for(profile, header, workload, None)?;
        let rel = format!("{}/{}", run.run_id, workload.script_name);
        run.latest_script_path = Some(self.store_script(&rel, &script)?);
        let now = iso_timestamp(self.host.now_ms());
        let mut request = req.raw.clone();
        if let Value::Object(map) = &mut request {
            // Decided once: asking again later is a new request.
            map.remove("newRun");
        }
        run.approval = Some(Approval {
            state: APPROVAL_PENDING.to_string(),
            reasons,
            requested_at: now.clone(),
            key: key.to_string(),
            request,
            ..Approval::default()
        });
        run.updated_at = now;
        self.save_run(&run)?;
        Ok(self.held_answer(&run, selection, false))
    }

    fn held_answer(&self, run: &RunRecord, selection: &Selection, reused: bool) -> Value {
        json!({
            "mode": "run_workload",
            "state": "PENDING_APPROVAL",
            "done": false,
            "cluster": run.cluster_id,
            "clusterSelection": selection,
            "runId": run.run_id,
            "jobId": Value::Null,
            "localScriptPath": run.latest_script_path,
            "approval": run.approval.as_ref().map(approval_json),
            "reused": reused,
            "next": how_to_decide(&run.run_id),
        })
    }

    /// True when `run` waits for, or was refused, an operator's decision,
    /// or was approved but not submitted yet: `check_workload` answers it
    /// with [`Tool::approval_status`].
    pub(super) fn awaits_decision(run: &RunRecord) -> bool {
        run.approval
            .as_ref()
            .is_some_and(|a| a.state != APPROVAL_APPROVED || run.last_job_id.is_none())
    }

    /// Whether an operator approved exactly the request `key` for `run`:
    /// asked of the host every time (the ledger is only a cache; the agent
    /// can write the workspace).
    pub(super) fn operator_approved(
        &mut self,
        run: Option<&RunRecord>,
        key: &str,
    ) -> Result<bool, ToolError> {
        let Some(run) = run.filter(|r| r.approval.is_some()) else {
            return Ok(false);
        };
        Ok(self
            .host
            .approval(&run.run_id)?
            .is_some_and(|d| d.approved && d.key == key))
    }

    /// What a held run's stored request amounts to, derived from the request
    /// itself: its digest and the limits it is above. This, not the ledger's
    /// copy, is what the operator is shown and what a decision covers.
    pub(super) fn assess(&self, run: &RunRecord) -> Result<Assessment, ToolError> {
        let Some(approval) = &run.approval else {
            return Err(invalid(format!(
                "run {} was never held for approval",
                run.run_id
            )));
        };
        let mut raw = approval.request.clone();
        if let Value::Object(map) = &mut raw {
            map.insert("action".into(), json!("run_workload"));
            map.insert("runId".into(), json!(run.run_id));
        }
        let request = Request::parse(&raw)
            .map_err(|e| invalid(format!("the held request is unreadable: {e}")))?;
        let (workload, _) = self.workload_of(&request)?;
        let primary = request
            .cluster
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(&run.cluster_id)
            .to_string();
        let profile = self.profile(&primary)?.clone();
        let header = gated_header(&profile, &workload)?;
        Ok(Assessment {
            key: super::submit::request_key(&primary, request.prefix.as_deref(), &workload),
            reasons: approval_reasons(&profile.policy.approval, &header),
            request,
        })
    }

    /// A held run as `list_runs` shows it (and `cluster-slurm approvals`
    /// to the operator): reasons and digest derived from the stored request,
    /// and the request itself, which is exactly what approval submits.
    pub(super) fn approval_listing(&self, run: &RunRecord, a: &Approval) -> Value {
        let mut listing = approval_json(a);
        if let Value::Object(map) = &mut listing {
            match self.assess(run) {
                Ok(assessed) => {
                    map.insert("reasons".into(), json!(assessed.reasons));
                    map.insert("key".into(), json!(assessed.key));
                }
                Err(e) => {
                    map.insert("unreadable".into(), json!(e.to_string()));
                }
            }
            map.insert("request".into(), a.request.clone());
        }
        listing
    }

    /// `check_workload` of a held run: the operator's decision if there is
    /// one; an approved run is submitted now.
    pub(super) fn approval_status(&mut self, mut run: RunRecord) -> Result<Value, ToolError> {
        let Some(mut approval) = run.approval.clone() else {
            return Err(invalid(format!(
                "run {} was never held for approval",
                run.run_id
            )));
        };
        let answer = |run: &RunRecord, approval: &Approval, state: &str, next: &str| {
            json!({
                "mode": "check_workload",
                "runId": run.run_id,
                "cluster": run.cluster_id,
                "jobId": Value::Null,
                "state": state,
                "done": state != "PENDING_APPROVAL",
                "approval": approval_json(approval),
                "next": next,
            })
        };
        if approval.state == APPROVAL_REJECTED {
            return Ok(answer(&run, &approval, "REJECTED", REJECTED_NEXT));
        }
        let Some(decision) = self.host.approval(&run.run_id)? else {
            return Ok(answer(
                &run,
                &approval,
                "PENDING_APPROVAL",
                &how_to_decide(&run.run_id),
            ));
        };
        let assessed = self.assess(&run)?;
        // Approved, but not this request (it was changed after the
        // decision): not submitted, and final like a rejection.
        let approved = decision.approved && decision.key == assessed.key;
        record(&mut approval, &decision, approved);
        run.approval = Some(approval.clone());
        run.updated_at = iso_timestamp(self.host.now_ms());
        self.save_run(&run)?;
        if !approved {
            return Ok(answer(&run, &approval, "REJECTED", REJECTED_NEXT));
        }
        let submitted = self.run_workload(&assessed.request)?;
        Ok(json!({
            "mode": "check_workload",
            "runId": run.run_id,
            "cluster": run.cluster_id,
            "jobId": submitted.get("jobId"),
            "state": "SUBMITTED",
            "done": false,
            "approval": approval_json(&approval),
            "submitted": submitted,
            "next": "Approved and submitted; call check_workload again to follow the job.",
        }))
    }
}

const REJECTED_NEXT: &str = "The operator rejected this request (or it changed after the decision); nothing was submitted. Change it (e.g. ask for less) in a new run, or talk to the operator.";

/// See [`Tool::assess`].
pub(super) struct Assessment {
    pub key: String,
    pub reasons: Vec<String>,
    pub request: Request,
}

fn record(approval: &mut Approval, decision: &Decision, approved: bool) {
    approval.state = if approved {
        APPROVAL_APPROVED
    } else {
        APPROVAL_REJECTED
    }
    .to_string();
    approval.decided_by = Some(decision.by.clone());
    approval.decided_at = Some(iso_timestamp(decision.at_ms));
    approval.note = Some(decision.note.clone()).filter(|n| !n.is_empty());
    if decision.approved && !approved {
        approval.note =
            Some("approved for another request than the one now held; not submitted".to_string());
    }
}

/// The header a request would be submitted with on `profile`, for the gate.
pub(super) fn gated_header(profile: &Profile, workload: &Workload) -> Result<Header, ToolError> {
    apply_policy(
        profile,
        &workload.overrides,
        workload.from_preset.is_some(),
        &workload.submit_args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_what_is_above_it() {
        let rules = ApprovalRules {
            gpus: Some(2),
            time_minutes: Some(24 * 60),
            array_tasks: Some(100),
            nodes: Some(4),
        };
        let at_limits = Header {
            gpus: Some(2),
            time: Some("24:00:00".into()),
            ..Header::default()
        };
        assert!(approval_reasons(&rules, &at_limits).is_empty());
        let above = Header {
            gpus: Some(3),
            time: Some("2-00:00:00".into()),
            array: Some("0-199".into()),
            nodes: Some(5),
            ..Header::default()
        };
        let r = approval_reasons(&rules, &above);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].starts_with("3 GPUs"), "{r:?}");
        assert!(
            r[1].contains("2-00:00:00") && r[1].contains("1-00:00:00"),
            "{r:?}"
        );
        assert!(r[2].contains("200 tasks"), "{r:?}");
        assert!(r[3].starts_with("5 nodes"), "{r:?}");
        let unlimited = Header {
            time: Some("UNLIMITED".into()),
            ..Header::default()
        };
        assert_eq!(
            approval_reasons(&rules, &unlimited).len(),
            1,
            "no limit is above any limit"
        );
        let many = Header {
            gpus: Some(64),
            ..Header::default()
        };
        assert!(approval_reasons(&ApprovalRules::default(), &many).is_empty());
    }
}
