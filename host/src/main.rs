//! `cluster-slurm`: the native host for the `cluster_slurm` policy component.
//!
//! ```text
//! cluster-slurm --config cluster-slurm.json call list_clusters
//! ```

fn main() -> std::process::ExitCode {
    cluster_slurm_host::cli::main()
}
