//! The `request` object given to `on_connection`: the client's upgrade request.

use std::net::SocketAddr;

/// The client's upgrade request, as `on_connection` sees it.
///
/// ```
/// # use ferrosock::Request;
/// fn allowed(request: &Request) -> bool {
///     request.headers().get("origin") == Some("https://example.com")
///         && request.query().get("token").is_some()
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    headers: Params,
    query: Params,
    url: String,
    remote_address: String,
}

impl Request {
    pub(crate) fn from_http<B>(request: &http::Request<B>, remote: SocketAddr) -> Request {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                // `http` stores names lower-cased already.
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let query = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let url = request.uri().path_and_query().map_or_else(
            || request.uri().path().to_owned(),
            |pq| pq.as_str().to_owned(),
        );
        Request {
            headers: Params(headers),
            query: Params(query),
            url,
            remote_address: remote.ip().to_canonical().to_string(),
        }
    }

    /// The request's headers, names lower-cased. A repeated header keeps every value.
    pub fn headers(&self) -> &Params {
        &self.headers
    }

    /// The URL's query parameters, percent-decoded. A repeated key keeps every value.
    pub fn query(&self) -> &Params {
        &self.query
    }

    /// The path and query exactly as in the request line, e.g. `/status?name=ryan`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client's IP address as plain text (`127.0.0.1`, `::1`); an IPv4-mapped IPv6
    /// address is shown as IPv4.
    pub fn remote_address(&self) -> &str {
        &self.remote_address
    }

    /// The request as 4D shows it: `{headers, query, url, remoteAddress}`, where a repeated
    /// header or key is a list of its values.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "headers": self.headers.to_json(),
            "query": self.query.to_json(),
            "url": self.url,
            "remoteAddress": self.remote_address,
        })
    }
}

/// Names with one or more values, in the order they came: request headers or query parameters.
///
/// ```
/// # use ferrosock::Params;
/// let params: Params = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
/// assert_eq!(params.get("a"), Some("1"));
/// assert_eq!(params.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
/// assert_eq!(params.to_json(), serde_json::json!({"a": ["1", "3"], "b": "2"}));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every (name, value) pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many (name, value) pairs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A JSON object: each name maps to its value, or to the list of its values when repeated.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.0 {
            match map.get_mut(name) {
                None => {
                    map.insert(name.clone(), value.clone().into());
                }
                Some(serde_json::Value::Array(values)) => values.push(value.clone().into()),
                Some(first) => {
                    let first = first.take();
                    map.insert(name.clone(), vec![first, value.clone().into()].into());
                }
            }
        }
        map.into()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Params {
        Params(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_an_http_request() {
        let http = http::Request::get("/status?name=ryan&tag=a%20b&tag=c+d")
            .header("Host", "localhost")
            .header("X-Multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:5000".parse().unwrap();
        let request = Request::from_http(&http, mapped);
        assert_eq!(request.url(), "/status?name=ryan&tag=a%20b&tag=c+d");
        assert_eq!(request.remote_address(), "10.0.0.7");
        assert_eq!(request.query().get("name"), Some("ryan"));
        assert_eq!(
            request.query().get_all("tag").collect::<Vec<_>>(),
            ["a b", "c d"]
        );
        assert_eq!(request.headers().get("host"), Some("localhost"));
        assert_eq!(
            request.headers().get_all("x-multi").collect::<Vec<_>>(),
            ["1", "2"]
        );
        let json = request.to_json();
        assert_eq!(json["headers"]["x-multi"], serde_json::json!(["1", "2"]));
        assert_eq!(json["query"]["name"], "ryan");
        assert_eq!(json["remoteAddress"], "10.0.0.7");
        let v6 = Request::from_http(&http, "[::1]:1".parse().unwrap());
        assert_eq!(v6.remote_address(), "::1");
    }
}
