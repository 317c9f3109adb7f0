//! Users and groups of the sandbox, read from its own `/etc/passwd` and `/etc/group`.
//!
//! The agent is a static binary, so NSS is not an option; and the sandbox's image decides who
//! its users are, so the files are read fresh on every lookup.

use std::path::Path;

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
    pub(crate) shell: String,
    /// Supplementary groups, the primary group included.
    pub(crate) groups: Vec<u32>,
}

/// A user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    #[error("unknown user {0:?}")]
    Unknown(String),
}

/// Resolves a user name or numeric uid; `None` is the sandbox's root.
pub(crate) fn resolve(spec: Option<&str>) -> Result<User, UserError> {
    resolve_in(Path::new("/etc"), spec)
}

pub(crate) fn resolve_in(etc: &Path, spec: Option<&str>) -> Result<User, UserError> {
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let spec = spec.map(str::trim).filter(|s| !s.is_empty());
    let numeric = spec.map_or(Some(0), |s| s.parse::<u32>().ok());
    let entry = passwd
        .lines()
        .filter_map(parse_passwd)
        .find(|u| match numeric {
            Some(uid) => u.uid == uid,
            None => Some(u.name.as_str()) == spec,
        });
    let mut user = match (entry, numeric) {
        (Some(u), _) => u,
        // A bare uid without an account still runs, in its own group, like `docker run -u`.
        (None, Some(uid)) => User {
            name: if uid == 0 {
                "root".into()
            } else {
                uid.to_string()
            },
            uid,
            gid: uid,
            home: if uid == 0 { "/root".into() } else { "/".into() },
            shell: "/bin/sh".into(),
            groups: Vec::new(),
        },
        (None, None) => return Err(UserError::Unknown(spec.unwrap_or_default().to_owned())),
    };
    let mut groups = vec![user.gid];
    for line in group.lines() {
        let mut f = line.split(':');
        let (Some(_name), Some(_pw), Some(gid), Some(members)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Ok(gid) = gid.trim().parse::<u32>() else {
            continue;
        };
        if members.split(',').any(|m| m.trim() == user.name) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    user.groups = groups;
    Ok(user)
}

fn parse_passwd(line: &str) -> Option<User> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(User {
        name: f[0].to_owned(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_owned(),
        shell: if f[6].is_empty() {
            "/bin/sh".to_owned()
        } else {
            f[6].to_owned()
        },
        groups: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\n\
             dev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh\nsvc:x:999:998::/nonexistent:\n",
        )
        .expect("passwd");
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\nsudo:x:27:dev\ndev:x:1000:\ndocker:x:998:svc,dev\n",
        )
        .expect("group");
        d
    }

    #[test]
    fn resolves_by_name_uid_and_default() {
        let d = etc();
        let dev = resolve_in(d.path(), Some("dev")).expect("dev");
        assert_eq!(
            (dev.uid, dev.gid, dev.home.as_str(), dev.shell.as_str()),
            (1000, 1000, "/home/dev", "/bin/zsh")
        );
        assert_eq!(dev.groups, vec![1000, 27, 998]);
        assert_eq!(resolve_in(d.path(), Some("1000")).expect("uid").name, "dev");
        let root = resolve_in(d.path(), None).expect("root");
        assert_eq!((root.uid, root.home.as_str()), (0, "/root"));
        let svc = resolve_in(d.path(), Some("svc")).expect("svc");
        assert_eq!(
            (svc.shell.as_str(), svc.groups.clone()),
            ("/bin/sh", vec![998])
        );
    }

    #[test]
    fn unknown_name_fails_and_bare_uid_works() {
        let d = etc();
        assert!(resolve_in(d.path(), Some("nobody-here")).is_err());
        let u = resolve_in(d.path(), Some("4242")).expect("bare uid");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4242, "/"));
    }
}
