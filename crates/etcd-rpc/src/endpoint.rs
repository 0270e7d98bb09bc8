//! What an etcd endpoint may look like: `host:port` or `http://host:port`. Checked before any
//! connection, with a message that says what to write instead.

/// The endpoint as a URL (`http://host:port`), or what is wrong with it. `https://` is refused:
/// this client has no TLS yet.
///
/// ```
/// assert_eq!(etcd_rpc::endpoint::url("10.0.0.1:2379").unwrap(), "http://10.0.0.1:2379");
/// assert!(etcd_rpc::endpoint::url("etcd").unwrap_err().contains("port"));
/// ```
pub fn url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err("an etcd endpoint is empty; write host:port or http://host:port".into());
    }
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{endpoint}: TLS to etcd is not supported yet; use http://"
        ));
    }
    let url = if endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else if endpoint.contains("://") {
        return Err(format!(
            "{endpoint}: an etcd endpoint is host:port or http://host:port"
        ));
    } else {
        format!("http://{endpoint}")
    };
    let rest = &url["http://".len()..];
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(url),
        _ => Err(format!(
            "{endpoint}: an etcd endpoint needs a host and a port, as 127.0.0.1:2379"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn endpoints_take_two_forms_and_refuse_the_rest() {
        assert_eq!(url("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(url(" http://etcd-0:2379 ").unwrap(), "http://etcd-0:2379");
        assert!(url("https://etcd:2379").unwrap_err().contains("TLS"));
        assert!(url("etcd").unwrap_err().contains("port"));
        assert!(url("etcd:http").unwrap_err().contains("port"));
        assert!(url("grpc://etcd:2379").unwrap_err().contains("host:port"));
        assert!(url("").unwrap_err().contains("empty"));
    }
}
