//! Request handling as pure functions of the request, for both sides of the service:
//! the public `/{token}/acMetadata/v1/…` API (appc spec, "Metadata service") and the root-only
//! registration API (`PUT /pods/{uuid}?token=…`, `PUT /pods/{uuid}/{app}`, `DELETE /pods/{uuid}`).

use appc::schema::Annotation;
use base64::Engine as _;

use crate::registry::Registry;
use crate::MdsError;

/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";
/// `Content-Type` of text answers (the appc spec's exact string).
pub const TEXT: &str = "text/plain; charset=us-ascii";
/// The header every public request must carry, and its value.
pub const FLAVOR_HEADER: (&str, &str) = ("Metadata-Flavor", "AppContainer");
/// The public API's path prefix after the token.
pub const PUBLIC_BASE: &str = "/acMetadata/v1";

/// A request, as far as the handlers look at it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, `PUT`, `DELETE`, ...
    pub method: &'a str,
    /// Path and query (`/pods/x?token=y`).
    pub url: &'a str,
    /// The `Metadata-Flavor` header's value, if present.
    pub flavor: Option<&'a str>,
    /// The body (already bounded by the server).
    pub body: &'a [u8],
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status: 200,
            content_type,
            body,
        }
    }

    pub fn text(status: u16, msg: impl Into<String>) -> Self {
        let mut body = msg.into().into_bytes();
        body.push(b'\n');
        Response {
            status,
            content_type: TEXT,
            body,
        }
    }
}

impl From<MdsError> for Response {
    fn from(e: MdsError) -> Self {
        let status = match &e {
            MdsError::BadRequest(_) => 400,
            MdsError::NotFound(_) => 404,
            MdsError::Conflict(_) => 409,
            _ => 500,
        };
        Response::text(status, e.to_string())
    }
}

fn split_query(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Handles one request of the registration side.
pub fn registration(reg: &Registry, req: &Request) -> Response {
    let (path, query) = split_query(req.url);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let res = match (req.method, segs.as_slice()) {
        ("PUT", ["pods", uuid]) => match query_value(query, "token") {
            Some(token) => reg.register_pod(uuid, &token, req.body),
            None => Err(MdsError::BadRequest("missing ?token=".into())),
        },
        ("PUT", ["pods", uuid, app]) => reg.register_app(uuid, app, req.body),
        ("DELETE", ["pods", uuid]) => {
            if reg.unregister_pod(uuid) {
                Ok(())
            } else {
                Err(MdsError::NotFound(format!("pod {uuid} is not registered")))
            }
        }
        (_, ["pods", ..]) => return Response::text(405, "method not allowed"),
        _ => return Response::text(404, "not found"),
    };
    match res {
        // Registering a pod answers with the public port, for its AC_METADATA_URL.
        Ok(()) if req.method == "PUT" && segs.len() == 2 => {
            Response::text(200, reg.public_port().to_string())
        }
        Ok(()) => Response::text(200, "OK"),
        Err(e) => e.into(),
    }
}

/// `annotations` of an image merged with those of the pod's app, as the ACE expects: in image
/// order, a pod-app annotation replacing the image's value of the same name in place, new names
/// appended in pod-app order.
pub fn merge_annotations(image: &[Annotation], app: &[Annotation]) -> Vec<Annotation> {
    let mut out = image.to_vec();
    for a in app {
        match out.iter_mut().find(|x| x.name == a.name) {
            Some(x) => x.value = a.value.clone(),
            None => out.push(a.clone()),
        }
    }
    out
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => Response::ok(JSON, b),
        Err(e) => Response::text(500, e.to_string()),
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn form_value<'f>(f: &'f [(String, String)], key: &str) -> Option<&'f str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Handles one request of the public side (`/{token}/acMetadata/v1/…`).
pub fn public(reg: &Registry, req: &Request) -> Response {
    if req.flavor != Some(FLAVOR_HEADER.1) {
        return Response::text(400, "Metadata-Flavor header missing or invalid");
    }
    let (path, _) = split_query(req.url);
    let Some((token, rest)) = path.trim_start_matches('/').split_once('/') else {
        return Response::text(404, "not found");
    };
    let Some(rest) = ("/".to_string() + rest)
        .strip_prefix(PUBLIC_BASE)
        .map(str::to_string)
    else {
        return Response::text(404, "not found");
    };
    // An unknown token answers like an unknown path: it reveals nothing about other pods.
    let Some(pod) = reg.by_token(token) else {
        return Response::text(404, "not found");
    };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (req.method, segs.as_slice()) {
        ("GET", ["pod", "annotations"]) => json(&pod.manifest.annotations),
        ("GET", ["pod", "manifest"]) => Response::ok(JSON, pod.manifest_json.clone()),
        ("GET", ["pod", "uuid"]) => Response::ok(TEXT, pod.uuid.clone().into_bytes()),
        ("GET", ["apps", name, what @ ..]) => {
            let Some(rt) = pod.manifest.apps.iter().find(|a| a.name.as_str() == *name) else {
                return Response::text(404, format!("no app {name:?} in this pod"));
            };
            match what {
                ["image", "id"] => Response::ok(TEXT, rt.image.id.clone().into_bytes()),
                ["image", "manifest"] | ["annotations"] => {
                    let Some(app) = pod.apps.get(*name) else {
                        return Response::text(404, format!("app {name:?} is not registered"));
                    };
                    if what == ["annotations"] {
                        json(&merge_annotations(
                            &app.image_manifest.annotations,
                            &rt.annotations,
                        ))
                    } else {
                        Response::ok(JSON, app.image_manifest_json.clone())
                    }
                }
                _ => Response::text(404, "not found"),
            }
        }
        ("POST", ["pod", "hmac", "sign"]) => {
            let f = form(req.body);
            let Some(content) = form_value(&f, "content") else {
                return Response::text(400, "missing content");
            };
            let sig = pod.sign(content.as_bytes());
            Response::ok(
                TEXT,
                base64::engine::general_purpose::STANDARD
                    .encode(sig)
                    .into_bytes(),
            )
        }
        ("POST", ["pod", "hmac", "verify"]) => {
            let f = form(req.body);
            let (Some(content), Some(uuid), Some(sig)) = (
                form_value(&f, "content"),
                form_value(&f, "uuid"),
                form_value(&f, "signature"),
            ) else {
                return Response::text(400, "content, uuid and signature are required");
            };
            let Some(signer) = reg.by_uuid(uuid) else {
                return Response::text(403, "signature does not match");
            };
            let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
                return Response::text(400, "signature is not base64");
            };
            if signer.verify(content.as_bytes(), &sig) {
                Response::ok(TEXT, Vec::new())
            } else {
                Response::text(403, "signature does not match")
            }
        }
        (_, ["pod", ..]) | (_, ["apps", ..]) => Response::text(405, "method not allowed"),
        _ => Response::text(404, "not found"),
    }
}
