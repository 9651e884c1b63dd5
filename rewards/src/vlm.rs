//! A success classifier behind any OpenAI-compatible chat-completions endpoint with image
//! input (vLLM, Ollama, llama.cpp server, hosted APIs).
//!
//! The prompt asks whether the task is complete and sends the frame as a base64 PNG data URL.
//! The yes/no answer becomes a probability from the first token's logprobs when the server
//! returns them (`p(yes) / (p(yes) + p(no))`), else from the text. Requests time out, are
//! retried with exponential backoff on timeouts, connection failures, HTTP 429 and 5xx, and
//! are spaced by a minimum interval (rate limit). Whatever cannot be answered is an error,
//! never a made-up probability: the reward node then marks the reward as missing.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::classifier::{ImageRef, SuccessClassifier};
use crate::error::{Error, Result};

/// How to reach and ask the VLM. Every field has a default except `base_url` and `model`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlmConfig {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a bearer token).
    pub api_key_env: Option<String>,
    /// Prompt for the success question; `{task}` is replaced by the task description.
    pub prompt: String,
    /// Ask for token logprobs (servers that do not support them are answered by text).
    pub logprobs: bool,
    pub top_logprobs: u32,
    pub max_tokens: u32,
    /// Whole-request timeout.
    pub timeout_ms: u64,
    /// Retries after the first attempt, for timeouts, connection errors, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff; doubles each retry up to `max_backoff_ms` (a `Retry-After` header is
    /// honoured up to the same cap).
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Rate limit: at least this long between the starts of two requests.
    pub min_interval_ms: u64,
    /// Decision threshold τ on the probability.
    pub threshold: f32,
}

impl Default for VlmConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key_env: None,
            prompt: "You are the success detector of a robot learning a task. The task is: \
                     {task}. Look at the camera image. Is the task complete right now? \
                     Answer with one word: yes or no."
                .into(),
            logprobs: true,
            top_logprobs: 5,
            max_tokens: 3,
            timeout_ms: 10_000,
            max_retries: 2,
            backoff_ms: 250,
            max_backoff_ms: 4_000,
            min_interval_ms: 0,
            threshold: 0.5,
        }
    }
}

impl VlmConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(Error::config(
                "base_url",
                format!("{:?} is not an http:// or https:// URL", self.base_url),
            ));
        }
        if cfg!(not(feature = "tls")) && self.base_url.starts_with("https://") {
            return Err(Error::config(
                "base_url",
                format!(
                    "{:?} is https, and this build has no TLS: rebuild with `--features tls`",
                    self.base_url
                ),
            ));
        }
        if self.model.is_empty() {
            return Err(Error::config("model", "is empty; name the served model"));
        }
        if self.timeout_ms == 0 || self.max_tokens == 0 {
            return Err(Error::config("timeout_ms/max_tokens", "must be positive"));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::config("threshold", "must be in [0, 1]"));
        }
        Ok(())
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Counts of what happened on the wire, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VlmStats {
    pub requests: u64,
    pub retries: u64,
    pub failures: u64,
    /// Total of the waits before retries, as decided (the backoff schedule, or `Retry-After`,
    /// capped at `max_backoff_ms`), milliseconds.
    pub backoff_ms: u64,
}

/// The client.
pub struct VlmClient {
    cfg: VlmConfig,
    agent: ureq::Agent,
    api_key: Option<String>,
    last_start: Option<Instant>,
    stats: VlmStats,
}

/// One attempt's failure: whether to retry, after how long at least, and why.
struct Attempt {
    retry: bool,
    retry_after: Option<Duration>,
    reason: String,
}

impl VlmClient {
    pub fn new(cfg: VlmConfig) -> Result<Self> {
        cfg.validate()?;
        let api_key = match &cfg.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                Error::config(
                    "api_key_env",
                    format!("environment variable {var} is not set"),
                )
            })?),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            cfg,
            agent,
            api_key,
            last_start: None,
            stats: VlmStats::default(),
        })
    }

    pub fn config(&self) -> &VlmConfig {
        &self.cfg
    }
    pub fn stats(&self) -> VlmStats {
        self.stats
    }

    /// The chat-completions request asking whether `task` is complete in `image`.
    pub fn success_request(&self, image: &ImageRef<'_>, task: &str) -> Result<Value> {
        let text = self.cfg.prompt.replace("{task}", task);
        let mut body = self.chat_body(image, &text, self.cfg.max_tokens)?;
        if self.cfg.logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(self.cfg.top_logprobs);
        }
        Ok(body)
    }

    /// A one-message chat body: the text and the image as a PNG data URL.
    pub fn chat_body(&self, image: &ImageRef<'_>, text: &str, max_tokens: u32) -> Result<Value> {
        Ok(json!({
            "model": self.cfg.model,
            "messages": [{
                "role": "user",
                "content": [
                    { "type": "text", "text": text },
                    { "type": "image_url", "image_url": { "url": png_data_url(image)? } },
                ],
            }],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }))
    }

    /// Probability that `task` is complete in `image`.
    pub fn success_probability(&mut self, image: &ImageRef<'_>, task: &str) -> Result<f32> {
        let body = self.success_request(image, task)?;
        let resp = self.post(&body)?;
        yes_probability(&resp)
    }

    /// Posts a chat-completions body with rate limiting, timeouts and retries; returns the
    /// parsed response.
    pub fn post(&mut self, body: &Value) -> Result<Value> {
        let endpoint = self.cfg.endpoint();
        let mut backoff = Duration::from_millis(self.cfg.backoff_ms);
        let cap = Duration::from_millis(self.cfg.max_backoff_ms);
        let mut attempt = 0;
        loop {
            self.pace();
            self.stats.requests += 1;
            let failure = match self.attempt(&endpoint, body) {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if !failure.retry || attempt >= self.cfg.max_retries {
                self.stats.failures += 1;
                let reason = if failure.retry {
                    format!(
                        "{} (gave up after {} attempts)",
                        failure.reason,
                        attempt + 1
                    )
                } else {
                    failure.reason
                };
                return Err(Error::Vlm { endpoint, reason });
            }
            let wait = failure.retry_after.unwrap_or(backoff).min(cap);
            tracing::debug!(%endpoint, reason = %failure.reason, ?wait, "retrying VLM request");
            self.stats.backoff_ms += u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(cap);
            attempt += 1;
            self.stats.retries += 1;
        }
    }

    /// Waits until `min_interval_ms` has passed since the last request started.
    fn pace(&mut self) {
        let gap = Duration::from_millis(self.cfg.min_interval_ms);
        if let Some(last) = self.last_start {
            let since = last.elapsed();
            if since < gap {
                std::thread::sleep(gap - since);
            }
        }
        self.last_start = Some(Instant::now());
    }

    fn attempt(&self, endpoint: &str, body: &Value) -> std::result::Result<Value, Attempt> {
        let mut req = self.agent.post(endpoint);
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send_json(body).map_err(|e| Attempt {
            retry: matches!(
                e,
                ureq::Error::Timeout(_)
                    | ureq::Error::Io(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
            ),
            retry_after: None,
            reason: match e {
                ureq::Error::Timeout(_) => {
                    format!("no answer within timeout_ms = {}", self.cfg.timeout_ms)
                }
                e => format!("request failed: {e}"),
            },
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = resp.body_mut().read_to_string().map_err(|e| Attempt {
            retry: matches!(e, ureq::Error::Timeout(_) | ureq::Error::Io(_)),
            retry_after: None,
            reason: format!("HTTP {status}, body unreadable: {e}"),
        })?;
        if status != 200 {
            return Err(Attempt {
                retry: status == 429 || status >= 500,
                retry_after,
                reason: format!("HTTP {status}: {}", snippet(&text)),
            });
        }
        serde_json::from_str(&text).map_err(|e| Attempt {
            retry: false,
            retry_after: None,
            reason: format!("malformed JSON in the response ({e}): {}", snippet(&text)),
        })
    }
}

impl SuccessClassifier for VlmClient {
    fn predict(&mut self, frames: &[ImageRef<'_>], task: &str) -> Result<Vec<f32>> {
        frames
            .iter()
            .map(|f| self.success_probability(f, task))
            .collect()
    }
    fn threshold(&self) -> f32 {
        self.cfg.threshold
    }
    fn name(&self) -> String {
        format!("vlm:{}", self.cfg.model)
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The frame as `data:image/png;base64,…`.
pub fn png_data_url(image: &ImageRef<'_>) -> Result<String> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, image.width, image.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Frame(format!("PNG encoding failed: {e}")))?;
        w.write_image_data(image.rgb)
            .map_err(|e| Error::Frame(format!("PNG encoding failed: {e}")))?;
    }
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The assistant's text of the first choice; a refusal or a missing message is an error.
pub fn answer_text(resp: &Value) -> Result<&str> {
    let msg = resp.pointer("/choices/0/message").ok_or_else(|| {
        Error::Answer(format!(
            "no choices[0].message in {}",
            snippet(&resp.to_string())
        ))
    })?;
    if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
        return Err(Error::Answer(format!("the model refused: {}", snippet(r))));
    }
    msg.get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Answer("choices[0].message.content is not text".into()))
}

/// `yes`/`no` from a token or word, ignoring case, spaces and punctuation.
fn yes_no(token: &str) -> Option<bool> {
    let t: String = token
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    match t.as_str() {
        "yes" | "y" => Some(true),
        "no" | "n" => Some(false),
        _ => None,
    }
}

/// The probability of "yes" in a chat-completions response: from the first token's top
/// logprobs when present (`p(yes) / (p(yes) + p(no))`), else 1 or 0 from the text. Anything
/// else (a refusal, an answer that is neither) is an error.
pub fn yes_probability(resp: &Value) -> Result<f32> {
    let text = answer_text(resp)?;
    if let Some(top) = resp
        .pointer("/choices/0/logprobs/content/0/top_logprobs")
        .and_then(Value::as_array)
    {
        let (mut py, mut pn) = (0.0f64, 0.0f64);
        for t in top {
            let (Some(tok), Some(lp)) = (
                t.get("token").and_then(Value::as_str),
                t.get("logprob").and_then(Value::as_f64),
            ) else {
                continue;
            };
            match yes_no(tok) {
                Some(true) => py += lp.exp(),
                Some(false) => pn += lp.exp(),
                None => {}
            }
        }
        if py + pn > 0.0 && (py + pn).is_finite() {
            return Ok((py / (py + pn)) as f32);
        }
    }
    let first = text.split_whitespace().next().unwrap_or("");
    match yes_no(first) {
        Some(true) => Ok(1.0),
        Some(false) => Ok(0.0),
        None => Err(Error::Answer(format!(
            "expected yes or no, the model said {:?}",
            snippet(text)
        ))),
    }
}
