//! Node identity: the Ed25519 keypair that signs everything this node says, the
//! display `NodeId` derived from it, and the X25519 Noise static key used for
//! end-to-end encryption, bound to the identity by a signature.
//!
//! Keys live in the data dir (`identity.key`, `noise.key`, mode 0600), created
//! on first start and reused after. A key file that exists but cannot be read
//! as a key is an error naming the file: the node never silently replaces its
//! identity, because peers, balances and reputation are tied to it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File holding the Ed25519 keypair (64 bytes: secret then public).
pub const IDENTITY_FILE: &str = "identity.key";
/// File holding the X25519 Noise static keypair (64 bytes: private then public).
pub const NOISE_FILE: &str = "noise.key";
/// Domain separation for the signature that binds the Noise key to the identity.
const NOISE_BINDING_CONTEXT: &[u8] = b"apn-noise-static-key-v1";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Length of an X25519 key.
pub const NOISE_KEY_BYTES: usize = 32;
/// The Noise protocol used for end-to-end encryption between originator and executor.
pub const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";

/// Errors loading or creating the node's keys.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a key file, or creating the data dir, failed.
    #[error("cannot read or write key file {path}: {source}")]
    Io {
        /// The key file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file has the wrong length or does not hold a valid key; it is never replaced.
    #[error("key file {path} is corrupt: {reason} (move it away to create a new identity)")]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating the X25519 Noise keypair failed.
    #[error("cannot generate a Noise key: {0}")]
    Noise(String),
}

/// A node's display name, `apn_` and 8 hex characters of the SHA-256 of its public key.
/// For people and logs only: authorisation always uses the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl utoipa::PartialSchema for NodeId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^apn_[0-9a-f]{8}$"))
            .into()
    }
}

impl utoipa::ToSchema for NodeId {}

impl NodeId {
    /// The NodeId of an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; PUBLIC_KEY_BYTES]) -> Self {
        let digest = Sha256::digest(public_key);
        NodeId(format!("apn_{}", hex::encode(&digest[..4])))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's keys, loaded once at start and shared read-only.
#[derive(Clone)]
pub struct Identity {
    keypair: ed25519::Keypair,
    public_key: [u8; PUBLIC_KEY_BYTES],
    node_id: NodeId,
    peer_id: PeerId,
    noise_private: [u8; NOISE_KEY_BYTES],
    noise_public: [u8; NOISE_KEY_BYTES],
    noise_binding: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Load the keys from `data_dir`, creating them (mode 0600) on first start. The data
    /// dir is made private (mode 0700): it holds the keys, the token, the ledger and the
    /// workspaces, and no other account on the machine may read or plant anything there.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        create_private_dir(data_dir)?;
        let identity_path = data_dir.join(IDENTITY_FILE);
        let keypair = match read_key_file(&identity_path, 64)? {
            Some(mut bytes) => ed25519::Keypair::try_from_bytes(&mut bytes).map_err(|e| {
                IdentityError::Corrupt {
                    path: identity_path.clone(),
                    reason: e.to_string(),
                }
            })?,
            None => {
                let keypair = ed25519::Keypair::generate();
                write_private_file(&identity_path, &keypair.to_bytes())?;
                tracing::info!(path = %identity_path.display(), "created a new node identity");
                keypair
            }
        };
        let noise_path = data_dir.join(NOISE_FILE);
        let (noise_private, noise_public) = match read_key_file(&noise_path, 64)? {
            Some(bytes) => split_noise(&bytes),
            None => {
                let generated = snow::Builder::new(parse_noise_params())
                    .generate_keypair()
                    .map_err(|e| IdentityError::Noise(e.to_string()))?;
                let mut bytes = generated.private.clone();
                bytes.extend_from_slice(&generated.public);
                write_private_file(&noise_path, &bytes)?;
                split_noise(&bytes)
            }
        };
        Ok(Self::from_parts(keypair, noise_private, noise_public))
    }

    /// Fresh keys that are never written anywhere (tests, benchmarks).
    pub fn ephemeral() -> Self {
        let keypair = ed25519::Keypair::generate();
        let (private, public) = match snow::Builder::new(parse_noise_params()).generate_keypair() {
            Ok(k) => {
                let mut bytes = k.private.clone();
                bytes.extend_from_slice(&k.public);
                split_noise(&bytes)
            }
            // Key generation only fails when the OS has no randomness; nothing can run then.
            Err(e) => panic!("no randomness for a Noise key: {e}"),
        };
        Self::from_parts(keypair, private, public)
    }

    fn from_parts(
        keypair: ed25519::Keypair,
        noise_private: [u8; NOISE_KEY_BYTES],
        noise_public: [u8; NOISE_KEY_BYTES],
    ) -> Self {
        let public_key = keypair.public().to_bytes();
        let peer_id = PublicKey::from(keypair.public()).to_peer_id();
        let mut binding_input = NOISE_BINDING_CONTEXT.to_vec();
        binding_input.extend_from_slice(&noise_public);
        let noise_binding = keypair.sign(&binding_input);
        Identity {
            node_id: NodeId::from_public_key(&public_key),
            public_key,
            peer_id,
            keypair,
            noise_private,
            noise_public,
            noise_binding,
        }
    }

    /// The display name.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The libp2p peer id (derived from the same Ed25519 key).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.public_key
    }

    /// The keypair in libp2p's form, for building the swarm.
    pub fn libp2p_keypair(&self) -> Keypair {
        Keypair::from(self.keypair.clone())
    }

    /// The Ed25519 secret key's 32 bytes, for the one other place that signs with it: the
    /// ledger server's nkey login (`network_ledger::permissions`). Never logged or sent.
    pub(crate) fn secret_key_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.keypair.secret().as_ref());
        bytes
    }

    /// Sign `message` with the identity key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.keypair.sign(message)
    }

    /// The X25519 public key peers encrypt to.
    pub fn noise_public(&self) -> [u8; NOISE_KEY_BYTES] {
        self.noise_public
    }

    /// The X25519 private key, for the Noise handshakes this node takes part in.
    pub fn noise_private(&self) -> &[u8; NOISE_KEY_BYTES] {
        &self.noise_private
    }

    /// The identity's signature over the Noise public key (published in announcements).
    pub fn noise_binding(&self) -> &[u8] {
        &self.noise_binding
    }
}

/// Check an Ed25519 signature by a raw public key.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match ed25519::PublicKey::try_from_bytes(public_key) {
        Ok(key) => key.verify(message, signature),
        Err(_) => false,
    }
}

/// Check that `noise_public` was bound to the identity `public_key` by `binding`.
pub fn verify_noise_binding(public_key: &[u8], noise_public: &[u8], binding: &[u8]) -> bool {
    let mut input = NOISE_BINDING_CONTEXT.to_vec();
    input.extend_from_slice(noise_public);
    verify_signature(public_key, &input, binding)
}

/// The libp2p PeerId of a raw Ed25519 public key, or `None` if it is not a valid key.
pub fn peer_id_of(public_key: &[u8]) -> Option<PeerId> {
    ed25519::PublicKey::try_from_bytes(public_key)
        .ok()
        .map(|key| PublicKey::from(key).to_peer_id())
}

/// The raw Ed25519 public key inside a PeerId (Ed25519 peer ids embed the key).
pub fn public_key_of(peer_id: &PeerId) -> Option<[u8; PUBLIC_KEY_BYTES]> {
    let key = PublicKey::try_decode_protobuf(peer_id.as_ref().digest()).ok()?;
    key.try_into_ed25519().ok().map(|k| k.to_bytes())
}

/// The Noise parameters as snow wants them. The string is a constant, so parsing cannot fail
/// in a build that passed its tests.
pub fn parse_noise_params() -> snow::params::NoiseParams {
    match NOISE_PARAMS.parse() {
        Ok(params) => params,
        Err(e) => panic!("constant Noise parameters {NOISE_PARAMS} do not parse: {e}"),
    }
}

fn split_noise(bytes: &[u8]) -> ([u8; NOISE_KEY_BYTES], [u8; NOISE_KEY_BYTES]) {
    let mut private = [0u8; NOISE_KEY_BYTES];
    let mut public = [0u8; NOISE_KEY_BYTES];
    private.copy_from_slice(&bytes[..NOISE_KEY_BYTES]);
    public.copy_from_slice(&bytes[NOISE_KEY_BYTES..2 * NOISE_KEY_BYTES]);
    (private, public)
}

/// Read a key file of exactly `length` bytes; `None` when it does not exist.
fn read_key_file(path: &Path, length: usize) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) if bytes.len() == length => Ok(Some(bytes)),
        Ok(bytes) => Err(IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("expected {length} bytes, found {}", bytes.len()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write a secret file readable by its owner only, atomically (temp file, then rename), so a
/// crash never leaves a half-written key behind.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    // A temporary file left by a crash is removed; anything planted there (a symbolic link
    // to a file of the attacker's choice) makes the exclusive create below fail instead of
    // being written through.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    fs::rename(&temporary, path).map_err(io_error)?;
    Ok(())
}

/// Create `dir` (and its parents) if missing, and make it mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io_error = |source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b/data");
        Identity::load_or_create(&data).unwrap();
        let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A symbolic link planted where the temporary key file goes is not written through.
        let target = dir.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        let key = data.join("x.key");
        std::os::unix::fs::symlink(&target, key.with_extension("tmp")).unwrap();
        write_private_file(&key, b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
    }

    #[test]
    fn identity_persists_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let second = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.node_id(), second.node_id());
        assert_eq!(first.peer_id(), second.peer_id());
        assert_eq!(first.noise_public(), second.noise_public());
        assert!(first.node_id().as_str().starts_with("apn_"));
        assert_eq!(first.node_id().as_str().len(), 12);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [IDENTITY_FILE, NOISE_FILE] {
                let mode = fs::metadata(dir.path().join(file))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), b"not a key").unwrap();
        let error = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, IdentityError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("identity.key"));
        // 64 bytes that are not a valid keypair (public half does not match the secret).
        fs::write(dir.path().join(IDENTITY_FILE), [7u8; 64]).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Corrupt { .. })
        ));
    }

    #[test]
    fn signatures_and_noise_binding_verify() {
        let identity = Identity::ephemeral();
        let signature = identity.sign(b"hello");
        assert!(verify_signature(
            &identity.public_key(),
            b"hello",
            &signature
        ));
        assert!(!verify_signature(
            &identity.public_key(),
            b"hellO",
            &signature
        ));
        assert!(verify_noise_binding(
            &identity.public_key(),
            &identity.noise_public(),
            identity.noise_binding()
        ));
        let other = Identity::ephemeral();
        assert!(!verify_noise_binding(
            &other.public_key(),
            &identity.noise_public(),
            identity.noise_binding()
        ));
        assert_eq!(peer_id_of(&identity.public_key()), Some(identity.peer_id()));
        assert_eq!(
            public_key_of(&identity.peer_id()),
            Some(identity.public_key())
        );
    }
}
