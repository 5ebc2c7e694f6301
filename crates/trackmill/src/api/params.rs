//! Query-string parameters: every key checked against the route's list (a misspelt one is a 400
//! that names it, never silently ignored), repeatable keys (`seed`), and numbers within bounds.

use super::routes::ApiError;

/// The parsed query string of one request.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `query`, refusing keys not in `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad(format!(
                "unknown parameter {k:?} (this route takes {})",
                allowed.join(", ")
            )));
        }
        Ok(Params(pairs))
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `key`: given twice is an error.
    pub fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.all(key).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(ApiError::bad(format!("{key} is given more than once"))),
        }
    }

    /// The value of a required `key`.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.one(key)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad(format!("{key} is required")))
    }

    /// A count within `min..=max`, `default` when absent.
    pub fn count(
        &self,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        let Some(v) = self.one(key)? else {
            return Ok(default);
        };
        match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "{key} = {v:?} is not a whole number between {min} and {max}"
            ))),
        }
    }

    /// A flag: `true`/`1` or `false`/`0`, `false` when absent.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.one(key)? {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(v) => Err(ApiError::bad(format!("{key} = {v:?} is not true or false"))),
        }
    }

    /// `format=json` (the default) or `format=m3u`.
    pub fn m3u(&self) -> Result<bool, ApiError> {
        match self.one("format")? {
            None | Some("json") => Ok(false),
            Some("m3u" | "m3u8") => Ok(true),
            Some(v) => Err(ApiError::bad(format!("format = {v:?}: write json or m3u"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_numbers_bounded() {
        let p = Params::parse(Some("seed=%2Fa&seed=%2Fb&length=5"), &["seed", "length"]).unwrap();
        assert_eq!(p.all("seed"), ["/a", "/b"]);
        assert_eq!(p.count("length", 50, 1, 10).unwrap(), 5);
        assert!(p.one("seed").is_err());
        assert!(Params::parse(Some("lenght=5"), &["length"]).is_err());
        let p = Params::parse(Some("n=0&harmonic=maybe"), &["n", "harmonic"]).unwrap();
        assert!(p.count("n", 20, 1, 1000).is_err());
        assert!(p.flag("harmonic").is_err());
        assert!(p.required("path").is_err());
    }
}
