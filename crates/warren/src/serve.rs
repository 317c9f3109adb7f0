//! `warren serve`: the daemon. Opens the runtime and the control plane (re-adopting sandboxes
//! that kept running while it was down), starts the TTL sweeper and serves the API. On a data
//! dir without the default image it serves at once and builds the image in the background.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use warren_api::{ApiLimits, ListenConfig};
use warren_control::{Control, ControlConfig, ResourceLimits};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// URL clients reach this server at (used in each sandbox's `dataplane_url`); defaults to
    /// `http://<listen>`.
    #[arg(long, env = "WARREN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Domain the service hosts of sandbox ports live under: `<port>-<sandbox id>.<domain>`,
    /// on the public URL's port. Browsers resolve every `*.localhost` name to the loopback, so
    /// the default works on this machine; elsewhere point a wildcard DNS name here. `none`
    /// leaves only path-based service URLs (`/svc/<id>/<port>/`).
    #[arg(long, env = "WARREN_SERVICE_DOMAIN", default_value = "localhost")]
    service_domain: String,
    /// Seconds between sweeps for idle and expired sandboxes.
    #[arg(long, default_value_t = 5)]
    sweep_interval: u64,
    /// Most sandboxes this host holds at once, in any state.
    #[arg(long, default_value_t = 2000)]
    max_sandboxes: usize,
    /// Most CPUs one sandbox may ask for (default: the host's CPUs).
    #[arg(long)]
    max_vcpus: Option<u32>,
    /// Most memory one sandbox may ask for, e.g. 8G (default: the host's memory).
    #[arg(long, value_parser = parse_size)]
    max_memory: Option<u64>,
    /// Most disk one sandbox may ask for, e.g. 100G (also bounded by the pool's free space).
    #[arg(long, value_parser = parse_size)]
    max_disk: Option<u64>,
    /// Process limit of every sandbox.
    #[arg(long, default_value_t = warren_control::admission::DEFAULT_PIDS)]
    sandbox_pids: u32,
    /// Most memory the running sandboxes may commit in total, e.g. 64G, or `none` (default: the
    /// host's memory × 4).
    #[arg(long, value_parser = parse_quota)]
    max_committed_memory: Option<Quota>,
    /// Most sandboxes one user holds (default: no per-user limit).
    #[arg(long)]
    user_max_sandboxes: Option<usize>,
    /// Most memory one user's running sandboxes may commit, e.g. 16G (default: no limit).
    #[arg(long, value_parser = parse_size)]
    user_max_memory: Option<u64>,
    /// Host memory creates leave available, e.g. 2G: past it they answer 503 [default: 512M
    /// or 2 % of the host, the lesser].
    #[arg(long, value_parser = parse_size)]
    reserve_memory: Option<u64>,
    /// Free disk creates leave in the storage pool, e.g. 10G: past it they answer 503.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    reserve_disk: u64,
    /// Sandboxes the default warm pool keeps booted even without demand (creates of the
    /// default image and shape are served from it at once).
    #[arg(long, default_value_t = 1)]
    pool_min: u32,
    /// Most sandboxes the default warm pool grows to under demand; 0 turns it off. `PUT
    /// /api/v2/sandboxes/pools` (`warren pool set`) changes both until the next start.
    #[arg(long, default_value_t = 8)]
    pool_max: u32,
    /// Tier of creates that name none: `jail` or `vm` (a sandbox may always ask for either;
    /// `vm` needs `scripts/vm/setup.sh`).
    #[arg(long, default_value = "jail")]
    default_tier: warren_control::Tier,
    /// Most client connections open at once; past it new connections get a 503 [default:
    /// 8192, or what the daemon's file descriptor limit leaves after `--max-sandboxes`
    /// sandboxes when that is less].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a client has to send a request head; slow and idle keep-alive connections are
    /// closed after it.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Largest upload, e.g. 4G (the sandbox's disk limit applies too).
    #[arg(long, value_parser = parse_size, default_value = "16G")]
    max_upload: u64,
    /// Bytes of each of stdout and stderr a blocking HTTP execute returns, e.g. 4M; the rest
    /// is dropped and the response says so.
    #[arg(long, value_parser = parse_size, default_value = "4M")]
    http_output_cap: u64,
    /// Sandbox networking: `proxied` links each sandbox to the egress proxy (HTTP(S) and DNS
    /// through Warren, under its `proxy_config`); `none` leaves it only its loopback.
    #[arg(long, value_enum, default_value = "proxied")]
    network: NetworkArg,
    /// A PEM CA certificate every sandbox trusts besides its image's (repeatable): for hosts
    /// whose outbound TLS is re-signed by a local CA, as corporate proxies do.
    #[arg(long = "sandbox-ca", value_name = "FILE")]
    sandbox_cas: Vec<std::path::PathBuf>,
    /// A PEM CA certificate the egress proxy also trusts when it verifies a server whose TLS it
    /// intercepts for a credential rule (repeatable); the host's trust store and every
    /// `--sandbox-ca` are trusted already.
    #[arg(long = "egress-upstream-ca", value_name = "FILE")]
    upstream_cas: Vec<std::path::PathBuf>,
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum NetworkArg {
    /// Loopback only.
    None,
    /// Through the egress proxy.
    Proxied,
}

impl ServeArgs {
    /// The resource bounds: host-derived defaults, then the flags.
    fn limits(&self) -> ResourceLimits {
        let mut l = ResourceLimits::from_host();
        l.max_sandboxes = self.max_sandboxes;
        l.pids = self.sandbox_pids;
        if let Some(v) = self.max_vcpus {
            l.max_vcpus = v;
        }
        if let Some(v) = self.max_memory {
            l.max_mem_bytes = v;
        }
        if let Some(v) = self.max_disk {
            l.max_fs_capacity_bytes = v;
        }
        if let Some(Quota(v)) = self.max_committed_memory {
            l.max_committed_mem_bytes = v;
        }
        l.user_max_sandboxes = self.user_max_sandboxes;
        l.user_max_mem_bytes = self.user_max_memory;
        l.reserve_mem_bytes = self.reserve_memory;
        l.reserve_disk_bytes = self.reserve_disk;
        l
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    warren_types::parse_size(s).map_err(|e| e.to_string())
}

/// A quota flag's value: a size, or `none` for no limit. (A newtype: clap reads a bare
/// `Option<Option<_>>` field as a flag whose value may be left out.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quota(Option<u64>);

fn parse_quota(s: &str) -> Result<Quota, String> {
    if s == "none" {
        return Ok(Quota(None));
    }
    parse_size(s).map(|n| Quota(Some(n)))
}

pub(crate) fn serve(data_dir: &Path, args: ServeArgs) -> Result<ExitCode> {
    let driver = crate::open_driver(data_dir)?;
    driver
        .storage()
        .check_quotas()
        .context("failed to check disk quotas")?;
    // A fresh data dir has no default image: serve at once and build it in the background;
    // creates from it answer 503 with the reason until it is published. An outdated one keeps
    // serving creates until its rebuild replaces it.
    let outdated = driver.has_image(&warren_types::ImageRef::default_image());
    if warren_runtime::image::build_default_image_in_background(driver.clone()) {
        if outdated {
            eprintln!(
                "rebuilding the default image from a newer recipe in the background (WARREN_LOG=info shows progress); creates use the old one until it is ready"
            );
        } else {
            eprintln!(
                "building the default image in the background (WARREN_LOG=info shows progress); creates from it answer 503 until it is ready"
            );
        }
    }
    let rt = crate::tokio_runtime()?;
    let limits = args.limits();
    // `--pool-max 0` alone turns the pool off: the default minimum follows it down.
    let default_pool =
        warren_control::pool::PoolSize::new(args.pool_min.min(args.pool_max), args.pool_max)
            .context("--pool-min/--pool-max")?;
    let sandboxes = driver.clone();
    rt.block_on(async move {
        let public_url = args
            .public_url
            .unwrap_or_else(|| format!("http://{}", args.listen))
            .trim_end_matches('/')
            .to_owned();
        let signer = crate::egress::ServerSigner::load(data_dir, &public_url)?;
        let egress = if args.network == NetworkArg::Proxied {
            let setup = crate::egress::link_sandboxes(
                &driver,
                &args.sandbox_cas,
                &args.upstream_cas,
                data_dir,
                signer.0.clone(),
            )
            .await?;
            Some(setup)
        } else {
            None
        };
        let lxcfs = start_lxcfs(data_dir);
        // A few seconds at most, so the first sandboxes already see their limits; past that
        // they start without (the supervisor keeps trying).
        if let Some(l) = &lxcfs
            && !l.ready(Duration::from_secs(3)).await
        {
            tracing::warn!("lxcfs is not up yet; serving anyway");
        }
        let cfg = ControlConfig {
            data_dir: data_dir.to_owned(),
            public_url: public_url.clone(),
            sweep_interval: Duration::from_secs(args.sweep_interval.max(1)),
            egress: egress.as_ref().map(crate::egress::EgressSetup::hooks),
            signer: Some(std::sync::Arc::new(signer)),
            service_domain: (args.service_domain != "none")
                .then(|| args.service_domain.trim_matches('.').to_ascii_lowercase()),
            limits,
            default_pool,
            default_tier: args.default_tier,
        };
        if args.default_tier == warren_control::Tier::Vm
            && let Err(reason) = driver.vm_assets()
        {
            anyhow::bail!("--default-tier vm: {reason}");
        }
        let (control, admin_key) = Control::open(cfg, std::sync::Arc::new(driver))
            .await
            .context("failed to open the control plane")?;
        if let Some(key) = admin_key {
            println!(
                "admin API key (shown once; also in {}): {key}",
                data_dir.join("admin.key").display()
            );
        }
        if let Some(setup) = egress {
            crate::egress::start_proxy(control.clone(), setup).await?;
        }
        tokio::spawn(control.clone().sweep_forever());
        tokio::spawn(control.clone().pools_forever());
        let listener = warren_api::bind(args.listen)
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        let listen = ListenConfig {
            max_connections: connection_cap(args.max_connections, args.max_sandboxes),
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            ..ListenConfig::default()
        };
        let api_limits = ApiLimits {
            upload_body_limit: usize::try_from(args.max_upload).unwrap_or(usize::MAX),
            http_output_cap: usize::try_from(args.http_output_cap).unwrap_or(usize::MAX),
        };
        tracing::info!(
            listen = %args.listen,
            %public_url,
            max_connections = listen.max_connections,
            "warren serving"
        );
        eprintln!("warren serving on {public_url}");
        let router = warren_api::router_with_limits(control.clone(), api_limits);
        // The accept loop runs on a worker rather than this thread's `block_on`: a connection
        // task spawned from a worker starts on that worker, where one spawned from here would
        // first have to wake a parked worker (a cross-CPU wakeup on every request).
        let serving = tokio::spawn(warren_api::serve(
            listener,
            router,
            control.clone(),
            listen,
            shutdown_signal(),
        ));
        let served = match serving.await {
            Ok(r) => r.context("server failed"),
            Err(e) => Err(anyhow::anyhow!("the server task failed: {e}")),
        };
        // Sandboxes outlive the daemon, but pooled ones belong to nobody yet.
        control.drain_pools().await;
        control.flush_audit();
        if let Some(lxcfs) = lxcfs {
            // Running sandboxes read their /proc views from this instance: it stays for them
            // (and the next daemon adopts it) unless none is left.
            lxcfs.stop(sandboxes.holds_sandboxes()).await;
        }
        served?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the data dir's LXCFS supervisor, if `lxcfs` is installed; sandboxes start without it
/// either way (`warren doctor` reports what they lack).
fn start_lxcfs(data_dir: &Path) -> Option<warren_runtime::LxcfsHandle> {
    if !warren_runtime::lxcfs::installed() {
        tracing::warn!(
            "lxcfs is not installed: sandboxes see the host's memory, CPUs and uptime in /proc (apt-get install lxcfs)"
        );
        return None;
    }
    let mount = data_dir.join(warren_runtime::jail_driver::LXCFS_DIR);
    Some(warren_runtime::LxcfsSupervisor::new(mount).spawn())
}

/// The connection cap: the flag, lowered to what the file descriptor limit leaves after the
/// sandboxes (each running sandbox costs the daemon descriptors). Raises the soft `nofile`
/// limit to the hard one first.
fn connection_cap(flag: Option<usize>, max_sandboxes: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let nofile = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "failed to read RLIMIT_NOFILE");
            return flag.unwrap_or(warren_api::DEFAULT_MAX_CONNECTIONS);
        }
    };
    let fits = warren_api::connection_cap_for(nofile, max_sandboxes).max(MIN_CONNECTIONS);
    match flag {
        Some(n) if n > fits => {
            tracing::warn!(
                requested = n,
                cap = fits,
                nofile,
                max_sandboxes,
                "--max-connections lowered to fit the file descriptor limit next to the sandboxes"
            );
            fits
        }
        Some(n) => n,
        None => warren_api::DEFAULT_MAX_CONNECTIONS.min(fits),
    }
}

/// The connection cap never goes below this, however little the descriptor limit leaves: a
/// daemon that answers nobody is no safer.
const MIN_CONNECTIONS: usize = 64;

/// Ctrl-C or SIGTERM. Sandboxes keep running: they do not depend on the daemon.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn limits(args: &[&str]) -> ResourceLimits {
        let all = std::iter::once("serve").chain(args.iter().copied());
        Wrap::try_parse_from(all)
            .expect("the flags parse")
            .serve
            .limits()
    }

    #[test]
    fn quota_flags_parse_to_limits() {
        assert_eq!(
            limits(&["--max-committed-memory", "64G"]).max_committed_mem_bytes,
            Some(64 << 30)
        );
        assert_eq!(
            limits(&["--max-committed-memory", "none"]).max_committed_mem_bytes,
            None
        );
        let l = limits(&["--reserve-memory", "2G", "--reserve-disk", "5G"]);
        assert_eq!(
            (l.reserve_mem_bytes, l.reserve_disk_bytes),
            (Some(2 << 30), 5 << 30)
        );
        let all = ["serve", "--max-committed-memory", "lots"];
        assert!(Wrap::try_parse_from(all).is_err());
        assert!(Wrap::try_parse_from(["serve", "--pool-min", "3", "--pool-max", "2"]).is_ok());
    }
}
