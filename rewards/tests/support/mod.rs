//! A local HTTP/1.1 server that speaks the OpenAI chat-completions wire format, scripted per
//! request: the stand-in for a hosted VLM, which cannot exist here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status and raw body, plus optional extra headers.
    Status(u16, String, Vec<(String, String)>),
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// 200 with a body that is not JSON.
    Raw(String),
}

type Headers = Vec<(String, String)>;

pub struct Server {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
    pub headers: Arc<Mutex<Vec<Headers>>>,
    /// When each request was read, in order.
    pub arrivals: Arc<Mutex<Vec<std::time::Instant>>>,
}

/// A chat completion whose content is `text`, with first-token top logprobs when given.
pub fn completion(text: &str, top: Option<&[(&str, f64)]>) -> Value {
    let mut choice = json!({
        "index": 0,
        "message": { "role": "assistant", "content": text },
        "finish_reason": "stop",
    });
    if let Some(top) = top {
        let tops: Vec<Value> = top
            .iter()
            .map(|(t, lp)| json!({ "token": t, "logprob": lp, "bytes": t.as_bytes() }))
            .collect();
        choice["logprobs"] = json!({ "content": [{
            "token": top[0].0, "logprob": top[0].1, "bytes": top[0].0.as_bytes(),
            "top_logprobs": tops,
        }]});
    }
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-vlm",
        "choices": [choice],
        "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
    })
}

fn read_request(s: &mut TcpStream) -> Option<(Vec<(String, String)>, Value)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().ok()?;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((headers, serde_json::from_slice(&body).ok()?))
}

fn respond(s: &mut TcpStream, reply: &Reply) {
    let (status, body, extra) = match reply {
        Reply::Json(v) => (200, v.to_string(), vec![]),
        Reply::Raw(b) => (200, b.clone(), vec![]),
        Reply::Status(c, b, h) => (*c, b.clone(), h.clone()),
        Reply::Delay(d, inner) => {
            std::thread::sleep(*d);
            return respond(s, inner);
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    let _ = s.write_all(format!("{head}\r\n{body}").as_bytes());
}

/// Serves `script` in order (the last reply repeats) on a free loopback port.
pub fn serve(script: Vec<Reply>) -> Server {
    serve_on(0, script)
}

/// Like [`serve`], on loopback port `port` (0: any free one).
pub fn serve_on(port: u16, script: Vec<Reply>) -> Server {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let headers = Arc::new(Mutex::new(Vec::new()));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (rq, hd, ar) = (requests.clone(), headers.clone(), arrivals.clone());
    std::thread::spawn(move || {
        let mut n = 0usize;
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let Some((h, body)) = read_request(&mut s) else {
                continue;
            };
            ar.lock().unwrap().push(std::time::Instant::now());
            rq.lock().unwrap().push(body);
            hd.lock().unwrap().push(h);
            let reply = script[n.min(script.len() - 1)].clone();
            n += 1;
            // Answer on its own thread so a slow reply does not hold up the next request.
            std::thread::spawn(move || respond(&mut s, &reply));
        }
    });
    Server {
        url,
        requests,
        headers,
        arrivals,
    }
}
