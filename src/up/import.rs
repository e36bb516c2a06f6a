//! `tunnel up --from-cloudflared`: a `cloudflared` `config.yml`'s `forwarders:` as
//! our TOML.

use std::path::Path;

use crate::error::Error;

/// One `[[tunnels]]` entry as `--from-cloudflared` writes it.
#[derive(Debug, serde::Serialize)]
struct Imported {
    name: String,
    hostname: String,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_token_id_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_token_secret_env: Option<String>,
}

/// `TUNNEL_<HOST>_<suffix>`, the host upper-cased with every other character `_`.
fn env_var_name(host: &str, suffix: &str) -> String {
    let stem: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TUNNEL_{stem}_{suffix}")
}

/// What `tunnel up --from-cloudflared FILE` prints: the `forwarders:` of a
/// `cloudflared` `config.yml` as our TOML, and, for the person, which environment
/// variables must hold the service tokens (secrets are never copied into the file).
pub fn from_cloudflared(path: &Path) -> Result<(String, Vec<String>), Error> {
    let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let empty = Vec::new();
    let forwarders = docs
        .first()
        .and_then(|d| d["forwarders"].as_vec())
        .unwrap_or(&empty);
    if forwarders.is_empty() {
        return Err(bad("no `forwarders:` list to import".into()));
    }
    let mut tunnels = Vec::new();
    let mut notes = Vec::new();
    for (i, f) in forwarders.iter().enumerate() {
        // yaml.v2/v3 spellings and the JSON ones cloudflared also reads.
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| f[*n].as_str().map(str::trim).filter(|s| !s.is_empty()))
                .map(str::to_string)
        };
        let at = |what: &str| bad(format!("forwarder #{}: {what}", i + 1));
        let hostname = field(&["url", "hostname"]).ok_or_else(|| at("has no `url`"))?;
        let listen = field(&["listener"]).ok_or_else(|| at("has no `listener`"))?;
        let listen = listen
            .split_once("://")
            .map_or(listen.clone(), |(_, r)| r.to_string());
        let host = hostname
            .split_once("://")
            .map_or(hostname.as_str(), |(_, r)| r);
        let host = host.split(['/', ':']).next().unwrap_or(host);
        let name = host.to_string();
        let id = field(&["serviceTokenID", "servicetokenid", "service_token_id"]);
        let secret = field(&[
            "serviceTokenSecret",
            "servicetokensecret",
            "secret_token_id",
        ]);
        let var = |suffix: &str| env_var_name(host, suffix);
        let (id_env, secret_env) = match (&id, &secret) {
            (Some(id), Some(_)) => {
                let (i, s) = (var("ID"), var("SECRET"));
                notes.push(format!(
                    "{name}: set {i}={id} and {s} to its service token secret (not copied from {})",
                    path.display()
                ));
                (Some(i), Some(s))
            }
            (None, None) => (None, None),
            _ => {
                return Err(at(
                    "has only half a service token (id and secret go together)",
                ));
            }
        };
        tunnels.push(Imported {
            name,
            hostname,
            listen,
            destination: field(&["destination"]),
            service_token_id_env: id_env,
            service_token_secret_env: secret_env,
        });
    }
    #[derive(serde::Serialize)]
    struct Out {
        tunnels: Vec<Imported>,
    }
    let body = toml::to_string(&Out { tunnels }).map_err(|e| bad(e.to_string()))?;
    let head = format!(
        "# Imported from {} by `tunnel up --from-cloudflared`.\n# Check it with `tunnel up --check --config FILE`.\n\n",
        path.display()
    );
    Ok((head + &body, notes))
}
