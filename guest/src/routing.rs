//! CPU/GPU routing: which profile a workload goes to, and whether a failure
//! text calls for a retry on the GPU profile.

use crate::config::Config;
use regex_lite::{Regex, RegexBuilder};
use serde::Serialize;

pub const DEFAULT_GPU_INDICATORS: &[&str] = &[
    "torch.cuda",
    "--device cuda",
    "device=cuda",
    "jax[cuda]",
    "jaxlib",
    "tensorflow-gpu",
    "cupy",
    "triton",
    "nvidia-smi",
    "cuda",
];

pub const DEFAULT_GPU_REQUIRED_SIGNATURES: &[&str] = &[
    "cuda is required",
    "cuda required",
    "gpu is required",
    "gpu required",
    "no cuda devices",
    "no cuda device",
    "found no nvidia driver",
    "torch.cuda.is_available() is false",
];

/// One entry of `gpuIndicators` / `gpuRequiredErrorSignatures`: a
/// case-insensitive substring, or `/pattern/flags` for a regular expression.
#[derive(Debug, Clone)]
pub struct Indicator {
    pub source: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Substring(String),
    Pattern(Regex),
}

impl Indicator {
    /// Parse one entry. JS-style flags: `i`, `m`, `s` map to the same regex
    /// flags; `g`, `y`, `u` change nothing for a yes/no match and are accepted.
    pub fn parse(source: &str) -> Result<Indicator, String> {
        let regex_form = source
            .strip_prefix('/')
            .and_then(|rest| rest.rfind('/').map(|end| rest.split_at(end)))
            // Like the reference, text whose "flags" are not regex flags (e.g.
            // "/usr/bin/nvidia-smi") is a plain substring, not a pattern.
            .filter(|(body, flags)| {
                !body.is_empty()
                    && flags
                        .trim_start_matches('/')
                        .chars()
                        .all(|c| "dgimsuy".contains(c))
            });
        let matcher = match regex_form {
            Some((body, flags)) => {
                let flags = flags.trim_start_matches('/');
                let re = RegexBuilder::new(body)
                    .case_insensitive(flags.contains('i'))
                    .multi_line(flags.contains('m'))
                    .dot_matches_new_line(flags.contains('s'))
                    .build()
                    .map_err(|e| format!("{source:?} is not a valid regular expression: {e}"))?;
                Matcher::Pattern(re)
            }
            None => Matcher::Substring(source.to_lowercase()),
        };
        Ok(Indicator {
            source: source.to_string(),
            matcher,
        })
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.matcher {
            Matcher::Substring(needle) => text.to_lowercase().contains(needle.as_str()),
            Matcher::Pattern(re) => re.is_match(text),
        }
    }
}

/// The first entry (in list order) that matches.
pub fn first_match<'a>(list: &'a [Indicator], text: &str) -> Option<&'a Indicator> {
    list.iter().find(|i| i.matches(text))
}

/// Why a profile was chosen; reported to the agent as `clusterSelection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    pub cluster_id: String,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_indicator: Option<String>,
}

/// Pick the profile for a workload: explicit cluster, else GPU profile when a
/// signal (the workload text or a command) matches a GPU indicator, else the
/// configured default, else the only profile.
pub fn select_cluster(
    config: &Config,
    explicit: Option<&str>,
    signals: &[&str],
) -> Result<Selection, String> {
    if let Some(id) = explicit.map(str::trim).filter(|s| !s.is_empty()) {
        return Ok(Selection {
            cluster_id: id.to_string(),
            reason: "explicit_cluster",
            matched_indicator: None,
        });
    }
    if let Some(gpu) = &config.routing.gpu_profile {
        let text = signals
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(hit) = first_match(&config.routing.gpu_indicators, &text) {
            return Ok(Selection {
                cluster_id: gpu.clone(),
                reason: "gpu_indicator",
                matched_indicator: Some(hit.source.clone()),
            });
        }
    }
    if let Some(default) = config.effective_default() {
        return Ok(Selection {
            cluster_id: default.to_string(),
            reason: "configured_default",
            matched_indicator: None,
        });
    }
    match config.clusters.as_slice() {
        [only] => Ok(Selection {
            cluster_id: only.id.clone(),
            reason: "single_profile",
            matched_indicator: None,
        }),
        _ => Err(
            "Unable to select cluster profile: configure routing.defaultProfile/defaultCluster or pass cluster explicitly"
                .to_string(),
        ),
    }
}

/// Outcome of asking whether a failure should be retried on the GPU profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    No(&'static str),
    ToGpu {
        to_cluster: String,
        matched_signature: String,
    },
}

pub fn should_fallback_to_gpu(
    config: &Config,
    selected: &str,
    error_text: &str,
    override_enabled: Option<bool>,
) -> Fallback {
    if !override_enabled.unwrap_or(config.routing.auto_fallback_to_gpu_on_signatures) {
        return Fallback::No("disabled");
    }
    let Some(gpu) = &config.routing.gpu_profile else {
        return Fallback::No("no_gpu_profile");
    };
    if gpu == selected {
        return Fallback::No("already_gpu");
    }
    match first_match(&config.routing.gpu_required_error_signatures, error_text) {
        None => Fallback::No("no_signature_match"),
        Some(sig) => Fallback::ToGpu {
            to_cluster: gpu.clone(),
            matched_signature: sig.source.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn config() -> Config {
        Config::parse(&json!({
            "defaultCluster": "cpu",
            "routing": {"gpuProfile": "gpu", "gpuIndicators": ["/--device\\s+cuda/i", "jax[cuda]"]},
            "clusters": {
                "cpu": {"sshTarget": "c", "remoteRoot": "/r"},
                "gpu": {"sshTarget": "g", "remoteRoot": "/r"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn explicit_beats_signals() {
        let s = select_cluster(&config(), Some("cpu"), &["python train.py --device cuda"]).unwrap();
        assert_eq!(
            (s.cluster_id.as_str(), s.reason),
            ("cpu", "explicit_cluster")
        );
    }

    #[test]
    fn regex_indicator_routes_to_gpu() {
        let s = select_cluster(
            &config(),
            None,
            &["replicate", "python train.py --DEVICE   cuda"],
        )
        .unwrap();
        assert_eq!(s.cluster_id, "gpu");
        assert_eq!(s.matched_indicator.as_deref(), Some("/--device\\s+cuda/i"));
    }

    #[test]
    fn no_indicator_uses_default() {
        let s = select_cluster(&config(), Some("  "), &["python3 analyse.py"]).unwrap();
        assert_eq!(
            (s.cluster_id.as_str(), s.reason),
            ("cpu", "configured_default")
        );
    }

    #[test]
    fn fallback_rules() {
        let c = config();
        assert_eq!(
            should_fallback_to_gpu(&c, "cpu", "RuntimeError: CUDA is required", None),
            Fallback::ToGpu {
                to_cluster: "gpu".into(),
                matched_signature: "cuda is required".into()
            }
        );
        assert_eq!(
            should_fallback_to_gpu(&c, "gpu", "cuda is required", None),
            Fallback::No("already_gpu")
        );
        assert_eq!(
            should_fallback_to_gpu(&c, "cpu", "cuda is required", Some(false)),
            Fallback::No("disabled")
        );
        assert_eq!(
            should_fallback_to_gpu(&c, "cpu", "segfault", None),
            Fallback::No("no_signature_match")
        );
    }

    #[test]
    fn bad_regex_is_reported() {
        assert!(Indicator::parse("/(unclosed/").is_err());
        assert!(
            Indicator::parse("/usr/bin/nvidia")
                .unwrap()
                .matches("/USR/BIN/NVIDIA")
        );
        // A lone slash-prefixed path is a substring, not a regex.
        assert!(
            Indicator::parse("/usr/bin/nvidia-smi")
                .unwrap()
                .matches("ran /usr/bin/nvidia-smi")
        );
    }
}
