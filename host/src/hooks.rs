//! Points in the host where a test can step in deterministically: swap a
//! file for a symlink exactly between a transfer's plan and its open, or end
//! the process right after a capability call took effect.
//!
//! Only test builds have them: without the `test-hooks` cargo feature (which
//! only this package's test targets enable, through a dev-dependency on
//! itself) [`at`] is an empty inline function and there is nothing to install.
//! With it, a hook runs only once a test installed one in its own process;
//! the `cluster-slurm` binary never does, and no input, file or environment
//! variable can. The crash switch of the durability tests lives in the
//! `cluster-slurm-test-host` binary, which exists only with the feature.
//!
//! ```ignore
//! hooks::install(|point| if let Point::BeforeOpen(path) = point { swap(path) });
//! ```
//!
//! Commands that decide on the cluster have points of their own, inside
//! the shell text: a `: NAME;` no-op there ([`shell`]) becomes a test's
//! shell commands (`hooks::install_shell("after-create", "ln -s ...")`), so
//! a swap lands exactly between two steps of the command.

use std::path::Path;

/// Where a hook is called.
#[derive(Debug)]
pub enum Point<'a> {
    /// A capability call of the guest has ended (its effect is done).
    CallEnded,
    /// A local file or directory is about to be opened by a transfer, after
    /// it was planned (the path is the one shown in messages).
    BeforeOpen(&'a Path),
    /// A remote file is about to be opened over SFTP by a transfer, after
    /// it was listed or looked at (the path is the one SFTP opens).
    BeforeRemoteOpen(&'a str),
}

#[cfg(feature = "test-hooks")]
mod installed {
    use super::Point;
    use std::sync::{Arc, RwLock};

    type Hook = Arc<dyn Fn(&Point<'_>) + Send + Sync>;
    static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

    pub fn install(hook: impl Fn(&Point<'_>) + Send + Sync + 'static) {
        if let Ok(mut slot) = HOOK.write() {
            *slot = Some(Arc::new(hook));
        }
    }

    pub fn clear() {
        if let Ok(mut slot) = HOOK.write() {
            *slot = None;
        }
        if let Ok(mut shells) = SHELL.write() {
            shells.clear();
        }
    }

    static SHELL: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

    pub fn install_shell(point: &str, commands: &str) {
        if let Ok(mut shells) = SHELL.write() {
            shells.push((point.to_string(), commands.to_string()));
        }
    }

    pub fn shell(text: &str) -> String {
        let mut text = text.to_string();
        if let Ok(shells) = SHELL.read() {
            for (point, commands) in shells.iter() {
                text = text.replace(&format!(": {point};"), &format!("{{ {commands}; }};"));
            }
        }
        text
    }

    pub fn at(point: Point<'_>) {
        let hook = HOOK.read().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(&point);
        }
    }
}

#[cfg(feature = "test-hooks")]
pub use installed::{clear, install, install_shell};

/// Run the installed hook, if this is a test build and a test installed one.
#[inline]
pub fn at(point: Point<'_>) {
    #[cfg(feature = "test-hooks")]
    installed::at(point);
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}

/// Shell text with its `: NAME;` points: as it is (no-ops), or, in a test
/// build, with the commands a test installed for a point in their place.
pub fn shell(text: &str) -> std::borrow::Cow<'_, str> {
    #[cfg(feature = "test-hooks")]
    return std::borrow::Cow::Owned(installed::shell(text));
    #[cfg(not(feature = "test-hooks"))]
    std::borrow::Cow::Borrowed(text)
}
