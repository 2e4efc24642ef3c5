//! The API key: from `SWITCHYARD_API_KEY`, else generated once and kept in
//! the data directory (`api-key`, mode 0600).

use std::io::Write;
use std::path::Path;

use rand::RngCore;

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Given by the operator (flag or environment).
    Given,
    /// Read from the data directory.
    Stored,
    /// Generated now and written to the data directory: print it once.
    Generated,
}

/// The file name of the stored key inside the data directory.
pub const KEY_FILE: &str = "api-key";

/// Returns the key to require: `given` if set, else the stored one, else a
/// new random one (written with mode 0600 and fsynced).
pub fn load_or_create(
    data_dir: &Path,
    given: Option<&str>,
) -> std::io::Result<(String, KeySource)> {
    if let Some(k) = given.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok((k.to_string(), KeySource::Given));
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok((k.trim().to_string(), KeySource::Stored)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(key.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok((key, KeySource::Generated))
}
