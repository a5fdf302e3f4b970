//! What one line from an MCP client is: a message for the MCP service, a
//! JSON-RPC error to answer it with, or (a notification or response that
//! cannot be used) nothing at all.
//!
//! The rules are JSON-RPC 2.0's (§4, §5, §5.1): a line that is not JSON is a
//! *Parse error* (-32700) and one that is JSON but not a Request object is an
//! *Invalid Request* (-32600), both answered with the request's id when it has
//! a usable one and `null` otherwise. Only a well-formed Request object
//! without an id is a notification, and a notification is never answered,
//! even when its method or params are wrong. MCP's stdio transport carries
//! one message per line and no batches, so a JSON array is an Invalid
//! Request too.

use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, CancelTaskMethod, CancelledNotificationMethod,
    ClientJsonRpcMessage, ClientNotification, ClientRequest, CompleteRequestMethod, ConstString,
    DiscoverRequestMethod, GetPromptRequestMethod, GetSkillRequestMethod, GetTaskMethod,
    InitializeRequestParams, InitializeResultMethod, InitializedNotificationMethod, JsonRpcMessage,
    ListPromptsRequestMethod, ListResourceTemplatesRequestMethod, ListResourcesRequestMethod,
    ListSkillsRequestMethod, ListToolsRequestMethod, PingRequestMethod, ProgressNotificationMethod,
    ReadResourceDirectoryRequestMethod, ReadResourceRequestMethod,
    RootsListChangedNotificationMethod, SetLevelRequestMethod, SubscribeRequestMethod,
    SubscriptionsListenRequestMethod, UnsubscribeRequestMethod, UpdateTaskMethod,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How deeply arrays and objects may sit inside one another in a request.
/// MCP requests need a handful of levels (the tool's arguments are at the
/// fourth); 64 leaves room for any honest argument and stays well under
/// serde_json's own recursion limit of 128, which would otherwise be the
/// first thing to stop a deep request.
pub const MAX_NESTING: usize = 64;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// Error messages quote serde's description of what was wrong, which can
/// quote the offending value; a reply stays short whatever was sent.
const MAX_MESSAGE_CHARS: usize = 400;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What to do with one line.
pub enum Verdict {
    /// Hand the message to the MCP service.
    Deliver(Box<ClientJsonRpcMessage>),
    /// Answer with this JSON-RPC error response (one JSON object).
    Reply(Value),
    /// Nothing to answer (a notification or response that cannot be used);
    /// the reason goes to stderr.
    Drop(String),
    /// A blank line: not a message, nothing to say.
    Blank,
}

/// Judge one line (without its `\n`). `initialized` says whether an
/// `initialize` request has been delivered yet: before it, rmcp ends the
/// whole session on a notification or response (it expects `initialize`
/// first), so those are dropped here instead.
pub fn judge(line: &[u8], initialized: bool) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // RFC 8259 §8.1 lets a parser ignore a byte order mark.
    let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Blank;
    }
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            return reply(
                Value::Null,
                PARSE_ERROR,
                format!(
                    "Parse error: the request is not valid UTF-8 (bad byte at offset {})",
                    e.valid_up_to()
                ),
            );
        }
    };
    // Counted on the text, before anything is parsed, so a request of a
    // million `[` costs one pass over its bytes and no recursion at all.
    if nested_deeper_than(text.as_bytes(), MAX_NESTING) {
        return reply(
            Value::Null,
            INVALID_REQUEST,
            format!(
                "Invalid Request: arrays and objects are nested more than {MAX_NESTING} levels deep (the limit)"
            ),
        );
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => message(value, initialized),
        Err(e) => reply(Value::Null, PARSE_ERROR, format!("Parse error: {e}")),
    }
}

/// The error response to a line longer than `limit` bytes.
pub fn too_long(limit: usize) -> Value {
    error_response(
        Value::Null,
        INVALID_REQUEST,
        format!(
            "Invalid Request: the request is longer than the limit of {} MiB ({limit} bytes) per line; it was read and dropped",
            limit / (1024 * 1024)
        ),
    )
}

/// A JSON-RPC 2.0 error response.
pub fn error_response(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": clip(message)}})
}

fn reply(id: Value, code: i64, message: String) -> Verdict {
    Verdict::Reply(error_response(id, code, message))
}

fn invalid(id: Value, why: &str) -> Verdict {
    reply(id, INVALID_REQUEST, format!("Invalid Request: {why}"))
}

/// Judge a line that is JSON.
fn message(value: Value, initialized: bool) -> Verdict {
    let object = match &value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return invalid(
                Value::Null,
                "a JSON array (a batch) is not supported; MCP sends one message per line",
            );
        }
        _ => return invalid(Value::Null, "a JSON-RPC message must be a JSON object"),
    };
    let id = object.get("id");
    // The id the answer carries: the request's own if it is one a client
    // could have meant (string or number), else null (§5: "If there was an
    // error in detecting the id ... it MUST be Null").
    let reply_id = match id {
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        _ => Value::Null,
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(reply_id, "\"jsonrpc\" must be \"2.0\"");
    }
    let is_response = object.contains_key("result") || object.contains_key("error");
    let method = match object.get("method") {
        None if is_response => return response(value, initialized),
        None => return invalid(reply_id, "no \"method\""),
        Some(Value::String(_)) if is_response => {
            return invalid(
                reply_id,
                "a message with a \"method\" cannot have \"result\" or \"error\"",
            );
        }
        Some(Value::String(method)) => method.clone(),
        Some(_) => return invalid(reply_id, "\"method\" must be a string"),
    };
    if let Some(problem) = request_problem(object) {
        return invalid(reply_id, problem);
    }
    let is_notification = id.is_none();
    let parsed = ClientJsonRpcMessage::deserialize(&value).map_err(|e| e.to_string());
    let parsed = parsed.and_then(|message| match misread_params(&message) {
        Some(why) => Err(why),
        None => Ok(message),
    });
    match parsed {
        Ok(_) if is_notification && !initialized => {
            Verdict::Drop(format!("notification {method:?} before initialize ignored"))
        }
        Ok(message) => Verdict::Deliver(Box::new(message)),
        // A well-formed notification is never answered (§4.1), even when
        // its params are wrong.
        Err(why) if is_notification => {
            Verdict::Drop(clip(format!("notification {method:?} ignored: {why}")))
        }
        Err(why) => reply(
            reply_id,
            INVALID_PARAMS,
            format!("Invalid params for {method:?}: {why}"),
        ),
    }
}

/// The methods rmcp knows from a client. When a message of one of them has
/// params that do not fit, rmcp does not fail: it reads it as a *custom*
/// method and then answers "method not found" (-32601, naming tools/call,
/// which exists). Such a message is reported here as the params error it is.
const STANDARD_REQUESTS: &[&str] = &[
    PingRequestMethod::VALUE,
    InitializeResultMethod::VALUE,
    DiscoverRequestMethod::VALUE,
    CompleteRequestMethod::VALUE,
    SetLevelRequestMethod::VALUE,
    GetPromptRequestMethod::VALUE,
    ListPromptsRequestMethod::VALUE,
    ListResourcesRequestMethod::VALUE,
    ListResourceTemplatesRequestMethod::VALUE,
    ReadResourceRequestMethod::VALUE,
    SubscriptionsListenRequestMethod::VALUE,
    SubscribeRequestMethod::VALUE,
    UnsubscribeRequestMethod::VALUE,
    CallToolRequestMethod::VALUE,
    ListToolsRequestMethod::VALUE,
    GetTaskMethod::VALUE,
    UpdateTaskMethod::VALUE,
    CancelTaskMethod::VALUE,
    ListSkillsRequestMethod::VALUE,
    GetSkillRequestMethod::VALUE,
    ReadResourceDirectoryRequestMethod::VALUE,
];

const STANDARD_NOTIFICATIONS: &[&str] = &[
    CancelledNotificationMethod::VALUE,
    ProgressNotificationMethod::VALUE,
    InitializedNotificationMethod::VALUE,
    RootsListChangedNotificationMethod::VALUE,
];

/// Why a message rmcp read as custom is really a standard one with bad
/// params (serde's words for the two that matter most here).
fn misread_params(message: &ClientJsonRpcMessage) -> Option<String> {
    let (method, params) = match message {
        JsonRpcMessage::Request(r) => match &r.request {
            ClientRequest::CustomRequest(c) if STANDARD_REQUESTS.contains(&c.method.as_str()) => {
                (c.method.as_str(), c.params.as_ref())
            }
            _ => return None,
        },
        JsonRpcMessage::Notification(n) => match &n.notification {
            ClientNotification::CustomNotification(c)
                if STANDARD_NOTIFICATIONS.contains(&c.method.as_str()) =>
            {
                (c.method.as_str(), c.params.as_ref())
            }
            _ => return None,
        },
        _ => return None,
    };
    let params = params.unwrap_or(&Value::Null);
    let why = if method == CallToolRequestMethod::VALUE {
        CallToolRequestParams::deserialize(params).err()
    } else if method == InitializeResultMethod::VALUE {
        InitializeRequestParams::deserialize(params).err()
    } else {
        None
    };
    Some(why.map_or_else(
        || "they do not fit the method".to_string(),
        |e| e.to_string(),
    ))
}

/// What makes a message with a string `method` not a Request object.
fn request_problem(object: &Map<String, Value>) -> Option<&'static str> {
    match object.get("params") {
        None | Some(Value::Object(_) | Value::Array(_)) => {}
        Some(_) => return Some("\"params\" must be an object or an array"),
    }
    match object.get("id") {
        None | Some(Value::String(_)) => None,
        Some(Value::Number(n)) if n.is_i64() => None,
        Some(_) => Some("\"id\" must be a string or an integer"),
    }
}

/// A response from the client (to a request of ours). Never answered.
fn response(value: Value, initialized: bool) -> Verdict {
    if !initialized {
        return Verdict::Drop("response before initialize ignored".to_string());
    }
    match serde_json::from_value::<ClientJsonRpcMessage>(value) {
        Ok(message) => Verdict::Deliver(Box::new(message)),
        Err(e) => Verdict::Drop(clip(format!("malformed response ignored: {e}"))),
    }
}

/// Whether this message is the `initialize` request.
pub fn is_initialize(message: &ClientJsonRpcMessage) -> bool {
    matches!(message, JsonRpcMessage::Request(r) if matches!(r.request, ClientRequest::InitializeRequest(_)))
}

/// Whether arrays and objects in `json` are nested more than `limit` deep.
/// Brackets inside strings do not count. On text that is not JSON the count
/// may be off; the parser then reports the text as unparsable anyway.
pub fn nested_deeper_than(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn clip(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", message.get(..end).unwrap_or_default()),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_id(v: &Verdict) -> (i64, Value) {
        match v {
            Verdict::Reply(r) => (r["error"]["code"].as_i64().unwrap(), r["id"].clone()),
            Verdict::Deliver(_) => panic!("delivered"),
            Verdict::Drop(why) => panic!("dropped: {why}"),
            Verdict::Blank => panic!("blank"),
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(!nested_deeper_than(br#"{"a":[[1]]}"#, 3));
        assert!(nested_deeper_than(br#"{"a":[[[1]]]}"#, 3));
        // Brackets in a string, and an escaped quote that does not end it.
        assert!(!nested_deeper_than(br#"{"a":"[[[[\"[[[["}"#, 1));
        assert!(!nested_deeper_than(&[b'['; MAX_NESTING], MAX_NESTING));
        assert!(nested_deeper_than(&[b'['; MAX_NESTING + 1], MAX_NESTING));
    }

    #[test]
    fn ids_are_echoed_only_when_usable() {
        let v = judge(br#"{"jsonrpc":"2.0","id":"a","params":{}}"#, true);
        assert_eq!(code_and_id(&v), (INVALID_REQUEST, json!("a")));
        let v = judge(br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#, true);
        assert_eq!(code_and_id(&v), (INVALID_REQUEST, Value::Null));
        let v = judge(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, true);
        assert_eq!(code_and_id(&v), (INVALID_REQUEST, json!(1.5)));
        let v = judge(br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#, true);
        assert_eq!(code_and_id(&v), (INVALID_REQUEST, json!(7)));
        // §6's example: a bad method and no id is still answered, with null.
        let v = judge(br#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#, true);
        assert_eq!(code_and_id(&v), (INVALID_REQUEST, Value::Null));
    }

    #[test]
    fn a_request_with_bad_params_is_invalid_params_with_its_id() {
        let v = judge(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#,
            true,
        );
        assert_eq!(code_and_id(&v), (INVALID_PARAMS, json!(3)));
    }

    #[test]
    fn well_formed_notifications_are_never_answered() {
        // Bad params on a known notification.
        let v = judge(
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#,
            true,
        );
        assert!(matches!(v, Verdict::Drop(_)), "answered a notification");
        // Any notification before initialize (rmcp would end the session).
        let v = judge(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            false,
        );
        assert!(matches!(v, Verdict::Drop(_)));
        let v = judge(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            true,
        );
        assert!(matches!(v, Verdict::Deliver(_)));
    }

    #[test]
    fn blank_lines_and_a_bom_are_not_errors() {
        assert!(matches!(judge(b"  \r", true), Verdict::Blank));
        let v = judge(
            b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r",
            true,
        );
        assert!(matches!(v, Verdict::Deliver(_)));
    }

    #[test]
    fn long_messages_are_clipped() {
        let huge = "x".repeat(100_000);
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":1,"arguments":"{huge}"}}}}"#
        );
        let Verdict::Reply(r) = judge(line.as_bytes(), true) else {
            panic!("not answered")
        };
        assert!(r.to_string().len() < 1_000, "{r}");
    }
}
