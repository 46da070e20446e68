//! What the wall checks of each answer: the status, the oRPC error shape, and panics.

use reqwest::Method;
use serde_json::Value;

/// What went wrong with one request, to print with the seed.
pub(crate) fn check_rpc_answer(
    method: &Method,
    status: u16,
    content_type: &str,
    body: &[u8],
    allowed: bool,
) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("a {status}"));
    }
    // OPTIONS: the CORS layer answers it as a preflight, empty, running nothing.
    if *method == Method::OPTIONS && status == 200 && body.is_empty() {
        return Ok(());
    }
    if !allowed && status != 405 {
        return Err(format!(
            "{method} is not allowed here, but the answer is {status}"
        ));
    }
    if *method == Method::HEAD {
        return Ok(());
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("content type {content_type:?}"));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|error| format!("body is not JSON: {error}"))?;
    let Some(object) = body.as_object() else {
        return Err("body is not an object".to_owned());
    };
    if status == 200 {
        return if object.keys().all(|key| key == "json" || key == "meta") {
            Ok(())
        } else {
            Err("success body is not {json, meta}".to_owned())
        };
    }
    if object.keys().any(|key| key != "json") {
        return Err("error body has keys besides json".to_owned());
    }
    check_error_object(&body["json"], status, true)
}

/// oRPC's rule: keys ⊆ {defined, code, status, message, data}, typed, `status` the HTTP one.
pub(crate) fn check_error_object(
    error: &Value,
    status: u16,
    with_status: bool,
) -> Result<(), String> {
    let Some(fields) = error.as_object() else {
        return Err("error is not an object".to_owned());
    };
    let allowed: &[&str] = if with_status {
        &["defined", "code", "status", "message", "data"]
    } else {
        &["code", "message", "issues"]
    };
    if let Some(key) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!("error has key {key:?}"));
    }
    if !error["code"].is_string() || !error["message"].is_string() {
        return Err("error code/message not strings".to_owned());
    }
    if with_status && (!error["defined"].is_boolean() || error["status"] != status) {
        return Err("error defined/status wrong".to_owned());
    }
    if let Some(issues) = error["data"]["issues"]
        .as_array()
        .or(error["issues"].as_array())
    {
        for issue in issues {
            if !issue["code"].is_string()
                || !issue["message"].is_string()
                || !issue["path"].is_array()
            {
                return Err(format!("malformed issue {issue}"));
            }
        }
    }
    Ok(())
}

/// Panics anywhere in this process (the api runs in it) are counted, whatever the thread.
pub(crate) fn count_panics() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let panics = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        seen.lock().unwrap().push(format!("[{thread}] {info}"));
        previous(info);
    }));
    panics
}
