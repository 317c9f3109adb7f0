//! The sandbox's root holds no capabilities, yet chown and chmod work for it as they do for
//! root anywhere: the agent makes those calls on its behalf (warren-agent's `ownership`).

use warren_proto::ExecSpec;

use crate::support::{TestSandbox, bash};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_gives_files_away_and_sets_their_modes_without_capabilities() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh(r#"set -e
grep '^CapEff:' /proc/self/status
groupadd -r svc
useradd -r -g svc -d /var/lib/svc -s /usr/sbin/nologin svc
mkdir -p /var/lib/svc
chown svc:svc /var/lib/svc
chmod 2750 /var/lib/svc
stat -c 'dir %U:%G %a' /var/lib/svc
ls /var/lib/svc > /dev/null && echo 'root enters what it gave away'
touch /var/lib/svc/denied 2>/dev/null || echo 'but gets only the group rights'
mkdir /etc/svc && chown svc:svc /etc/svc && chmod 2770 /etc/svc && touch /etc/svc/conf && echo 'root writes where the group may'
mkdir /srv/x && cd /srv && touch x/f && chown svc x/f && chmod 0600 x/f
stat -c 'relative %U:%G %a' /srv/x/f
ln -s /etc/hostname /tmp/link && chown -h svc /tmp/link
stat -c 'link %U' /tmp/link; stat -L -c 'target %U' /tmp/link
touch /srv/x/g
python3 -c 'import os, pwd; fd=os.open("/srv/x/g", os.O_RDONLY); os.fchown(fd, pwd.getpwnam("svc").pw_uid, -1); os.fchmod(fd, 0o640)'
stat -c 'fd %U:%G %a' /srv/x/g
chown root:root /var/lib/svc && chmod 00700 /var/lib/svc
stat -c 'back %U:%G %a' /var/lib/svc
grep svc /etc/gshadow | cut -d: -f1
"#)
        .await;
    assert_eq!(out.code(), 0, "{}{}", out.out(), out.err());
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("0000000000000000"),
        "the command itself still holds nothing: {}",
        lines[0]
    );
    assert_eq!(
        &lines[1..],
        [
            "dir svc:svc 2750",
            "root enters what it gave away",
            "but gets only the group rights",
            "root writes where the group may",
            "relative svc:root 600",
            "link svc",
            "target root",
            "fd svc:root 640",
            "back root:root 700",
            "svc",
        ],
        "{text}"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_and_unmapped_ids_get_the_kernels_answer() {
    let sb = TestSandbox::new().await;
    let setup = sb
        .sh("useradd -m alice && touch /tmp/rootfile /tmp/alicefile && chown alice /tmp/alicefile")
        .await;
    assert_eq!(setup.code(), 0, "{}", setup.err());
    let as_alice = sb
        .exec(ExecSpec {
            argv: bash(
                "chown alice /tmp/rootfile; echo chown=$?; chmod 777 /tmp/rootfile; echo chmod=$?; \
                 chmod 600 /tmp/alicefile; echo own=$?",
            ),
            user: Some("alice".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(
        as_alice.out().lines().collect::<Vec<_>>(),
        ["chown=1", "chmod=1", "own=0"],
        "{}",
        as_alice.err()
    );
    assert!(
        as_alice.err().contains("Operation not permitted"),
        "{}",
        as_alice.err()
    );
    // 70000 is past the sandbox's 65536 ids: no such owner exists on the host side either.
    let unmapped = sb
        .python(
            "import os\ntry:\n    os.chown('/tmp/rootfile', 70000, -1)\nexcept OSError as e:\n    print(e.errno)",
        )
        .await;
    assert_eq!(unmapped.out().trim(), "22", "EINVAL: {}", unmapped.err());
    sb.destroy().await;
}
