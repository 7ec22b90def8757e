//! The skopeo-style reference forms: `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`,
//! `docker-archive:PATH[:NAME:TAG]`.

use std::path::PathBuf;

use crate::OciError;

/// Which container format a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    OciDir,
    /// A tar of an OCI image layout.
    OciArchive,
    /// The output of `docker save` (a tar with `manifest.json`).
    DockerArchive,
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The format.
    pub format: Format,
    /// The directory or file.
    pub path: PathBuf,
    /// OCI: the `org.opencontainers.image.ref.name` to pick; docker: the `NAME:TAG` among
    /// `RepoTags`. None: the only image there is.
    pub tag: Option<String>,
}

impl Reference {
    /// `None` when `s` is none of the three forms; an error when it is one but malformed.
    /// The path ends at the first `:` after the prefix, as in skopeo.
    pub fn parse(s: &str) -> Option<Result<Reference, OciError>> {
        let (format, rest) = if let Some(r) = s.strip_prefix("oci:") {
            (Format::OciDir, r)
        } else if let Some(r) = s.strip_prefix("oci-archive:") {
            (Format::OciArchive, r)
        } else if let Some(r) = s.strip_prefix("docker-archive:") {
            (Format::DockerArchive, r)
        } else {
            return None;
        };
        let (path, tag) = match rest.split_once(':') {
            Some((p, t)) => (p, Some(t.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Some(Err(OciError::BadReference(s.to_string(), "no path")));
        }
        if tag.as_deref() == Some("") {
            return Some(Err(OciError::BadReference(s.to_string(), "empty tag")));
        }
        Some(Ok(Reference {
            format,
            path: PathBuf::from(path),
            tag,
        }))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = match self.format {
            Format::OciDir => "oci",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
        };
        write!(f, "{prefix}:{}", self.path.display())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let r = Reference::parse("oci:/x/y:1.0").and_then(Result::ok);
        assert_eq!(
            r,
            Some(Reference {
                format: Format::OciDir,
                path: "/x/y".into(),
                tag: Some("1.0".into())
            })
        );
        let r = Reference::parse("docker-archive:a.tar:foo:2").and_then(Result::ok);
        assert_eq!(r.map(|r| r.tag), Some(Some("foo:2".into())));
        assert!(Reference::parse("oci-archive:a.tar").is_some_and(|r| r.is_ok()));
        assert!(Reference::parse("example.com/app").is_none());
        assert!(Reference::parse("oci:").is_some_and(|r| r.is_err()));
        assert!(Reference::parse("oci:x:").is_some_and(|r| r.is_err()));
    }
}
