//! The images the node runs: built from our Dockerfiles by `scripts/build-images` as OCI
//! archives, checked to be current, imported into the node's containerd under the names the
//! manifests use, and readable here (config and files) so that tests can check what a
//! Dockerfile produced.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sandbox image the node's containerd runs every pod's network namespace in.
pub(crate) const PAUSE: &str = "registry.k8s.io/pause:3.10.2";

/// The archives `scripts/build-images` writes, and the names containerd gives them. The kubelet
/// asks for `sync-elector:0.1.0`, which the CRI expands to `docker.io/library/sync-elector:0.1.0`.
const ARCHIVES: [(&str, &str); 3] = [
    ("pause.tar", "registry.k8s.io/pause"),
    ("sync-elector.tar", "docker.io/library/sync-elector"),
    ("sync-examples.tar", "docker.io/library/sync-examples"),
];

/// The repository's root folder.
pub(crate) fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder `scripts/build-images` writes to: `$SYNC_IMAGES_DIR`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/sync-rs/images`.
pub fn images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNC_IMAGES_DIR") {
        return PathBuf::from(dir);
    }
    crate::control_plane_dir()
        .parent()
        .expect("the control plane's folder has a parent")
        .join("images")
}

/// Panics, saying what to run, unless every image is built from the current sources.
pub(crate) fn check_current() {
    let out = Command::new(repository().join("scripts/build-images"))
        .arg("--check")
        .output()
        .expect("scripts/build-images runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Imports every image into the containerd listening on `socket`, in the namespace the CRI uses.
pub(crate) fn import(socket: &Path) {
    for (archive, name) in ARCHIVES {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "images", "import", "--base-name", name])
            .arg(images_dir().join(archive))
            .output()
            .expect("ctr runs (containerd: scripts/install-test-deps installs it)");
        assert!(
            out.status.success(),
            "importing {archive} into containerd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One image as `scripts/build-images` wrote it: an OCI archive.
pub struct ImageArchive {
    path: PathBuf,
}

impl ImageArchive {
    /// The sidecar's image, `sync-elector:0.1.0`.
    pub fn elector() -> Self {
        Self::named("sync-elector.tar")
    }

    /// The examples' image, `sync-examples:0.1.0`.
    pub fn examples() -> Self {
        Self::named("sync-examples.tar")
    }

    fn named(file: &str) -> Self {
        let path = images_dir().join(file);
        assert!(
            path.exists(),
            "{} is missing: run scripts/build-images (scripts/test does)",
            path.display()
        );
        Self { path }
    }

    /// The image's configuration: its `config` object holds `User`, `Entrypoint`, `Cmd`,
    /// `Env` and `WorkingDir`.
    pub fn config(&self) -> serde_json::Value {
        let manifest = self.manifest();
        self.json_blob(
            manifest["config"]["digest"]
                .as_str()
                .expect("a config digest"),
        )
    }

    /// The file at `path` (absolute, as the container sees it) in the image's filesystem:
    /// from the newest layer that has it. `None` when no layer has it.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        let member = path.trim_start_matches('/');
        let manifest = self.manifest();
        for layer in manifest["layers"].as_array()?.iter().rev() {
            let digest = layer["digest"].as_str()?;
            let unpack = if layer["mediaType"].as_str()?.ends_with("gzip") {
                "-xzOf"
            } else {
                "-xOf"
            };
            let out = Command::new("sh")
                .args([
                    "-c",
                    r#"tar -xOf "$0" "$1" | tar "$2" - "$3" "./$3" 2>/dev/null"#,
                ])
                .arg(&self.path)
                .arg(blob_member(digest))
                .arg(unpack)
                .arg(member)
                .output()
                .expect("tar runs");
            if !out.stdout.is_empty() {
                return Some(out.stdout);
            }
        }
        None
    }

    fn manifest(&self) -> serde_json::Value {
        let index = self.json_member("index.json");
        self.json_blob(
            index["manifests"][0]["digest"]
                .as_str()
                .expect("the index names a manifest"),
        )
    }

    fn json_blob(&self, digest: &str) -> serde_json::Value {
        self.json_member(&blob_member(digest))
    }

    fn json_member(&self, member: &str) -> serde_json::Value {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&self.path)
            .arg(member)
            .output()
            .expect("tar runs");
        assert!(
            out.status.success(),
            "{} has no {member}",
            self.path.display()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{member} in {}: {e}", self.path.display()))
    }
}

fn blob_member(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}
