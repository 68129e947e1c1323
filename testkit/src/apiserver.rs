//! A real kube-apiserver with its own etcd on 127.0.0.1, for tests of the
//! control plane driven by `kubectl` and kube-rs.
//!
//! What runs: kube-apiserver and kubectl 1.20.2, cached in
//! [`CACHE_DIR`] by `deploy/kube-apiserver.sh`, and etcd 3.4 from Debian's
//! `etcd-server` ([`ETCD`]). No registry ships kube-apiserver, so the script
//! builds it offline from Debian 12's `kubernetes` source package (which
//! vendors every Go dependency) with Debian's Go: about 8 minutes on 2 cores
//! and 2 GB of scratch space under /var/tmp, once per machine; kubectl is
//! Debian's own build of the same source, unpacked from its .deb. If the
//! binaries are missing, [`ApiServer::start`] panics and says to run the
//! script: the tests never skip silently.
//!
//! EndpointSlice: 1.20 serves `discovery.k8s.io` only as v1beta1, and
//! podswitch reads v1. The server runs with v1beta1 off
//! (`--runtime-config=discovery.k8s.io/v1beta1=false`) and a CRD named
//! `endpointslices.discovery.k8s.io` serves v1 in its place, with a schema
//! that keeps any field: the server stores what a test applies (no
//! validation, no defaults) and kube-rs reads and watches it with the
//! k8s-openapi v1 types, as from a real cluster. Nothing runs the
//! controllers: Services get a ClusterIP (10.96.0.0/12), but no Endpoints or
//! EndpointSlices appear unless a test writes them (Service
//! default/kubernetes, 10.96.0.1, has none either).
//!
//! Each [`ApiServer`] has its own temporary directory (etcd data, serving
//! certificates the server makes itself, a static token file with an admin
//! token in `system:masters`, the service-account key, the kubeconfig and the
//! logs `etcd.log` and `kube-apiserver.log`) and free ports on 127.0.0.1.
//! Authorization is RBAC (the admin may do anything); the only admission
//! plugin is NamespaceLifecycle. Dropping it kills both processes (by PID,
//! SIGTERM then SIGKILL) and removes the directory, also when the test
//! panics; if the test process itself dies, the kernel kills them
//! (`PR_SET_PDEATHSIG`), so the thread that calls [`ApiServer::start`] and
//! [`ApiServer::start_apiserver`] must live as long as the server (a test's
//! own thread does).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where `deploy/kube-apiserver.sh` caches kube-apiserver and kubectl.
pub const CACHE_DIR: &str = "/var/cache/podswitch/kubernetes-1.20.2";
/// etcd from Debian's `etcd-server` package.
pub const ETCD: &str = "/usr/bin/etcd";
/// How long etcd, then kube-apiserver, may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The CRD that serves `discovery.k8s.io/v1` EndpointSlices on 1.20.
const ENDPOINTSLICE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: endpointslices.discovery.k8s.io
  annotations:
    # Any URL: the group is reserved for Kubernetes, this stands in for it.
    api-approved.kubernetes.io: "https://github.com/kubernetes/kubernetes/pull/0"
spec:
  group: discovery.k8s.io
  scope: Namespaced
  names:
    plural: endpointslices
    singular: endpointslice
    kind: EndpointSlice
    listKind: EndpointSliceList
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Temporary directories are `DIR_PREFIX<pid>-<n>`.
const DIR_PREFIX: &str = "podswitch-apiserver-";

/// An etcd and a kube-apiserver on 127.0.0.1, owned by a test.
pub struct ApiServer {
    dir: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_client_port: u16,
    port: u16,
    kubeconfig: PathBuf,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver, waits until the server is ready,
    /// registers the EndpointSlice v1 CRD and waits until it is served.
    /// Panics (with the server's log) if any of it fails.
    pub fn start() -> ApiServer {
        for binary in [cached("kube-apiserver"), cached("kubectl"), ETCD.into()] {
            assert!(
                binary.is_file(),
                "{} is missing: run deploy/kube-apiserver.sh (as root) to build and cache \
                 kube-apiserver and kubectl and install etcd",
                binary.display()
            );
        }
        remove_stale_dirs();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        // A leftover of an earlier process that had our PID is stale.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let [etcd_client_port, etcd_peer_port, port] = free_ports();
        // From here on, Drop cleans up whatever panics.
        let mut server = ApiServer {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            etcd: None,
            apiserver: None,
            etcd_client_port,
            port,
        };
        let token = admin_token();
        write_file(
            &server.dir.join("tokens.csv"),
            &format!("{token},admin,admin,\"system:masters\"\n"),
        );
        write_file(&server.kubeconfig, &kubeconfig_yaml(port, &token));
        let out = Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(server.dir.join("sa.key"))
            .arg("2048")
            .output()
            .unwrap_or_else(|e| {
                panic!("running openssl (deploy/kube-apiserver.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "openssl genrsa failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_etcd(etcd_peer_port);
        server.start_apiserver();
        server.register_endpointslice_crd();
        server
    }

    /// The kubeconfig file (token auth, TLS verification off) that reaches
    /// this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's secure port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory with the logs, certificates and etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// Runs kubectl 1.20.2 against this server with `args`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .unwrap_or_else(|e| panic!("running kubectl: {e}"))
    }

    /// Runs kubectl with `args` and returns its standard output; panics with
    /// its standard error if it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` with `yaml` on standard input; panics with
    /// kubectl's standard error if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let mut child = self
            .kubectl_command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running kubectl: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(yaml.as_bytes())
            .unwrap_or_else(|e| panic!("writing to kubectl: {e}"));
        drop(stdin);
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for kubectl: {e}"));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills kube-apiserver (SIGTERM, then SIGKILL after 10 s), leaving etcd
    /// running: the API is unreachable until [`ApiServer::start_apiserver`].
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            terminate(child);
        }
    }

    /// Starts kube-apiserver on the same port with the same etcd, token and
    /// certificate directory, and waits until it is ready.
    pub fn start_apiserver(&mut self) {
        assert!(
            self.apiserver.is_none(),
            "kube-apiserver is already running"
        );
        let d = |name: &str| self.dir.join(name).display().to_string();
        let args = [
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_client_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", d("certs")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            format!("--service-account-key-file={}", d("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            "--runtime-config=discovery.k8s.io/v1beta1=false".into(),
            "--enable-admission-plugins=NamespaceLifecycle".into(),
            format!(
                "--disable-admission-plugins={}",
                DEFAULT_ADMISSION.join(",")
            ),
            "--enable-priority-and-fairness=false".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            // The default reconciler would publish 127.0.0.1 as the
            // endpoint of Service default/kubernetes, which validation
            // refuses (loopback), and log that every 10 s.
            "--endpoint-reconciler-type=none".into(),
        ];
        let mut command = Command::new(cached("kube-apiserver"));
        command.args(args);
        self.apiserver = Some(spawn(&mut command, &self.dir.join("kube-apiserver.log")));
        self.wait_ready();
    }

    fn start_etcd(&mut self, peer_port: u16) {
        let client = format!("http://127.0.0.1:{}", self.etcd_client_port);
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new(ETCD);
        command
            .arg("--name=podswitch")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=podswitch={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=warn");
        self.etcd = Some(spawn(&mut command, &self.dir.join("etcd.log")));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.etcd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "etcd exited ({status}) before it was healthy; etcd.log ends:\n{}",
                    self.log_tail("etcd.log")
                );
            }
            if etcd_healthy(self.etcd_client_port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy on 127.0.0.1:{} after {READY_TIMEOUT:?}; etcd.log ends:\n{}",
                self.etcd_client_port,
                self.log_tail("etcd.log")
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Polls `/readyz` (through kubectl, twice a second) until it answers
    /// `ok`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("(not asked yet: the port was closed)");
        loop {
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kube-apiserver exited ({status}) before it was ready; kube-apiserver.log ends:\n{}",
                    self.log_tail("kube-apiserver.log")
                );
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let out = self.kubectl(&["get", "--raw=/readyz", "--request-timeout=5s"]);
                if out.status.success() && out.stdout.trim_ascii() == b"ok" {
                    return;
                }
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready on 127.0.0.1:{} after {READY_TIMEOUT:?}; /readyz said:\n{last}\n\
                 kube-apiserver.log ends:\n{}",
                self.port,
                self.log_tail("kube-apiserver.log")
            );
            sleep(Duration::from_millis(500));
        }
    }

    /// Registers the EndpointSlice v1 CRD and waits until it is Established
    /// and listable.
    fn register_endpointslice_crd(&self) {
        self.apply(ENDPOINTSLICE_CRD);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/endpointslices.discovery.k8s.io",
        ]);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.kubectl(&[
                "get",
                "endpointslices.v1.discovery.k8s.io",
                "--all-namespaces",
            ]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the EndpointSlice v1 CRD is established but not served after {READY_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            sleep(Duration::from_millis(250));
        }
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(cached("kubectl"));
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kubectl-cache").display()
            ))
            .args(args);
        command
    }

    /// The last 40 lines of the log `name`.
    fn log_tail(&self, name: &str) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.dir.join(name)) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_apiserver();
        if let Some(etcd) = self.etcd.take() {
            terminate(etcd);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The admission plugins 1.20 enables by default, all but
/// NamespaceLifecycle: nothing here runs the controllers some of them rely
/// on (ServiceAccount would refuse pods without a token controller).
const DEFAULT_ADMISSION: [&str; 16] = [
    "LimitRanger",
    "ServiceAccount",
    "TaintNodesByCondition",
    "Priority",
    "DefaultTolerationSeconds",
    "DefaultStorageClass",
    "StorageObjectInUseProtection",
    "PersistentVolumeClaimResize",
    "RuntimeClass",
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
    "DefaultIngressClass",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
];

/// Removes the directories of test processes that died without dropping
/// their server (killed by a signal, say).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn cached(name: &str) -> PathBuf {
    Path::new(CACHE_DIR).join(name)
}

/// Ports on 127.0.0.1 that were free a moment ago (all held at once, so
/// they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local address").port())
}

/// A token nobody else guesses by accident (the server listens on
/// 127.0.0.1 only, so it need not resist an attacker).
fn admin_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{:x}", std::process::id())
}

fn kubeconfig_yaml(port: u16, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: podswitch-test
  cluster:
    server: https://127.0.0.1:{port}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {token}
contexts:
- name: podswitch-test
  context:
    cluster: podswitch-test
    user: admin
current-context: podswitch-test
"
    )
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Spawns `command` with its output appended to `log`; the kernel kills it
/// if the spawning thread dies.
fn spawn(command: &mut Command, log: &Path) -> Child {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()))
    };
    command.stdin(Stdio::null()).stdout(open()).stderr(open());
    // SAFETY: the hook runs in the forked child before exec; it only calls
    // prctl, which is async-signal-safe and allocates nothing.
    unsafe { command.pre_exec(die_with_parent) };
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// Asks the kernel to kill this process when the thread that forked it dies.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this
    // process's own attributes.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited within 10 s.
/// Never panics (it runs in Drop).
fn terminate(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill takes a PID and a signal number; the PID is our own
        // child's, not yet reaped, so it names no other process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether etcd answers `GET /health` with health true.
fn etcd_healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}
