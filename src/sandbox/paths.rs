//! Which paths a sandboxed run may see: the system set, the profile program's install tree
//! and the configured extras. Pure functions over paths (plus `which`, which reads `PATH`
//! and the file system, and `shebang_interpreter`, which reads a file's first line), so the
//! choices are unit-tested without a kernel feature.

use std::path::{Component, Path, PathBuf};

/// System directories every run may read and execute from (those that exist). `/proc` is
/// not here: the sandbox mounts a fresh one for the run's PID namespace and allows it
/// separately. `/opt`, `/home`, `/root`, `/srv`, `/var`, `/tmp`, `/run` and `/mnt` are
/// deliberately absent: a profile that needs something there names it in
/// `read_only_paths`.
pub const SYSTEM_READ_ONLY_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Device files every run may read.
pub const READABLE_DEVICES: &[&str] = &["/dev/zero", "/dev/random", "/dev/urandom"];

/// Device files every run may read and write.
pub const WRITABLE_DEVICES: &[&str] = &["/dev/null", "/dev/full"];

/// The absolute path of `program`: itself when it contains a `/` (made absolute against
/// the current directory), else the first executable file of that name on `search_path`.
pub fn which(program: &str, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(path)
        };
        return is_executable_file(&absolute).then_some(absolute);
    }
    std::env::split_paths(search_path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directory tree a program is installed in, from its path:
/// - inside `node_modules`, the package directory (`…/node_modules/<name>` or
///   `…/node_modules/@scope/<name>`, the outermost one): an npm CLI and its dependencies;
/// - in a `bin` or `sbin` directory, that directory's parent (`/opt/tool/bin/x` →
///   `/opt/tool`; `/usr/local/bin/x` → `/usr/local`);
/// - else the program's own directory.
pub fn install_root(program: &Path) -> PathBuf {
    let components: Vec<Component> = program.components().collect();
    if let Some(index) = components
        .iter()
        .position(|c| c.as_os_str() == "node_modules")
    {
        let scoped = components
            .get(index + 1)
            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('@'));
        let end = (index + if scoped { 3 } else { 2 }).min(components.len());
        return components[..end].iter().collect();
    }
    let Some(parent) = program.parent() else {
        return program.to_path_buf();
    };
    match parent.file_name().and_then(|n| n.to_str()) {
        Some("bin" | "sbin") => parent.parent().unwrap_or(parent).to_path_buf(),
        _ => parent.to_path_buf(),
    }
}

/// True when granting `root` would expose something a run must never see: the file system
/// root, any of `protected` (the node's data dir, the operator's home), or an ancestor of
/// one of them.
pub fn exposes_protected(root: &Path, protected: &[&Path]) -> bool {
    root.parent().is_none() || protected.iter().any(|p| p.starts_with(root) || root == *p)
}

/// The interpreter named by a script's `#!` line (`#!/usr/bin/env node` → `node` looked up
/// on `search_path`), if the file starts with one.
pub fn shebang_interpreter(
    script: &Path,
    search_path: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let read = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let interpreter = words.next()?;
    if Path::new(interpreter)
        .file_name()
        .is_some_and(|n| n == "env")
    {
        let program = words.find(|w| !w.starts_with('-'))?;
        return which(program, search_path);
    }
    Some(PathBuf::from(interpreter))
}

/// Read-only paths a profile's program needs: for the program as found on `search_path`
/// and for its canonical path (after symbolic links), and the same for a script's
/// interpreter, the install tree ([`install_root`]), or the file alone when the tree would
/// expose a protected path ([`exposes_protected`]). Empty when the program is not found
/// (the run then fails to start, which is the right error).
pub fn program_read_only_paths(
    program: &str,
    search_path: Option<&std::ffi::OsStr>,
    protected: &[&Path],
) -> Vec<PathBuf> {
    let Some(found) = which(program, search_path) else {
        return Vec::new();
    };
    let mut files = vec![found.clone()];
    if let Ok(canonical) = std::fs::canonicalize(&found) {
        if let Some(interpreter) = shebang_interpreter(&canonical, search_path) {
            files.push(interpreter.clone());
            if let Ok(canonical) = std::fs::canonicalize(&interpreter) {
                files.push(canonical);
            }
        }
        files.push(canonical);
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for file in files {
        let root = install_root(&file);
        let grant = if exposes_protected(&root, protected) {
            file
        } else {
            root
        };
        if !paths.contains(&grant) {
            paths.push(grant);
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_roots() {
        assert_eq!(
            install_root(Path::new("/usr/local/bin/claude")),
            Path::new("/usr/local")
        );
        assert_eq!(
            install_root(Path::new(
                "/usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js"
            )),
            Path::new("/usr/local/lib/node_modules/@anthropic-ai/claude-code")
        );
        assert_eq!(
            install_root(Path::new(
                "/home/u/.npm/lib/node_modules/codex/node_modules/x/bin/codex.js"
            )),
            Path::new("/home/u/.npm/lib/node_modules/codex")
        );
        assert_eq!(
            install_root(Path::new("/opt/amp/sbin/amp")),
            Path::new("/opt/amp")
        );
        assert_eq!(
            install_root(Path::new("/home/u/.local/share/claude/versions/2.1.0")),
            Path::new("/home/u/.local/share/claude/versions")
        );
    }

    #[test]
    fn protected_paths_are_never_granted() {
        let home = Path::new("/home/u");
        let data = Path::new("/home/u/apn/data");
        let protected = [home, data];
        assert!(exposes_protected(Path::new("/"), &protected));
        assert!(exposes_protected(Path::new("/home"), &protected));
        assert!(exposes_protected(Path::new("/home/u"), &protected));
        assert!(exposes_protected(Path::new("/home/u/apn"), &protected));
        assert!(!exposes_protected(Path::new("/home/u/.local"), &protected));
        assert!(!exposes_protected(Path::new("/usr/local"), &protected));
    }

    #[test]
    fn a_program_in_home_bin_gets_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let bin = home.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let program = bin.join("agent");
        std::fs::write(&program, "#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let search = std::env::join_paths([bin.as_path()]).unwrap();
        let paths = program_read_only_paths("agent", Some(search.as_os_str()), &[home]);
        let canonical = std::fs::canonicalize(&program).unwrap();
        assert!(paths.contains(&canonical), "{paths:?}");
        assert!(!paths.iter().any(|p| p == home), "{paths:?}");
        assert!(program_read_only_paths("no-such-agent", Some(search.as_os_str()), &[]).is_empty());
    }

    #[test]
    fn env_shebangs_resolve_on_the_search_path() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cli.js");
        std::fs::write(&script, "#!/usr/bin/env -S sh -e\n").unwrap();
        let search = std::env::join_paths(["/usr/bin", "/bin"]).unwrap();
        let interpreter = shebang_interpreter(&script, Some(search.as_os_str())).unwrap();
        assert!(interpreter.ends_with("sh"), "{interpreter:?}");
        std::fs::write(&script, "plain text").unwrap();
        assert_eq!(shebang_interpreter(&script, Some(search.as_os_str())), None);
    }
}
