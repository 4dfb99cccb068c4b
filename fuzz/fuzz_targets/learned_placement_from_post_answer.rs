//! Feeds an arbitrary answer to `POST /v1/statement` — the first line is the `:status` value, the rest
//! the body, as raw bytes — to what the learn role reads it with: [`first_page_query_id`] directly,
//! and a learn stream on a fresh router (the routed request's headers, the answer's headers, the body
//! in two messages) that records the query's owner.
//!
//! Checks, beyond not panicking: a query id read from the body is a valid query id that appears in the
//! body as a JSON string; the router learns an owner exactly when the status is `200`, the body is
//! small enough and names a query id, and then the id is placed on the cluster the request was routed
//! to; the learn stream answers every message with a reply of that message's phase that changes
//! nothing (no header mutation, no immediate response).

#![no_main]

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, ProcessingRequest};
use libfuzzer_sys::fuzz_target;
use trino_router::envoy::ext_proc::service::ProcessingStream;
use trino_router::envoy::ext_proc::stream::{MAX_LEARN_BODY, Role, Step, first_page_query_id};
use trino_router_fuzz::{Answer, answer_of, changes_anything, fresh_router, header_map, phase_of};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"200"[..], data),
    };
    let read = first_page_query_id(body);
    if let Ok(Ok(id)) = &read {
        let quoted = format!("\"{id}\"");
        assert!(
            body.windows(quoted.len()).any(|w| w == quoted.as_bytes()),
            "{id:?} is not a JSON string of the body"
        );
    }

    let router = fresh_router(false);
    let mut learn = ProcessingStream::new(router.clone(), Role::Learn);
    let routed: &[(&str, &[u8])] =
        &[(":method", b"POST"), (":path", b"/v1/statement"), ("x-trino-cluster", b"trino-b")];
    let half = body.len() / 2;
    let messages = [
        Request::RequestHeaders(headers(routed)),
        Request::ResponseHeaders(headers(&[(":status", status), ("content-type", b"application/json")])),
        Request::ResponseBody(HttpBody {
            body: body[..half].to_vec(),
            end_of_stream: false,
            ..Default::default()
        }),
        Request::ResponseBody(HttpBody {
            body: body[half..].to_vec(),
            end_of_stream: true,
            ..Default::default()
        }),
    ];
    for request in messages {
        let phase = phase_of(&request);
        match learn.on_message(ProcessingRequest { request: Some(request), ..Default::default() }) {
            Step::Reply(reply) => match answer_of(&reply) {
                Answer::Phase(answered, common) => {
                    assert_eq!(answered, phase, "a reply answers the phase asked");
                    assert!(!changes_anything(common), "a learn stream changes nothing: {reply:?}");
                }
                other => panic!("a learn stream answered {other:?}"),
            },
            other => panic!("a learn stream that is not observing replies to every message, not {other:?}"),
        }
    }

    let affinity = router.affinity();
    match read {
        Ok(Ok(id)) if status == b"200" && body.len() <= MAX_LEARN_BODY => {
            assert_eq!(affinity.owner_of(&id).as_deref(), Some("trino-b"), "{id:?} learned");
        }
        _ => assert_eq!(
            (affinity.coordinator_ids(), affinity.exact_entries()),
            (0, 0),
            "nothing is learned from status {:?}",
            String::from_utf8_lossy(status)
        ),
    }
});

fn headers(pairs: &[(&str, &[u8])]) -> HttpHeaders {
    HttpHeaders { headers: Some(header_map(pairs.iter().copied())), ..Default::default() }
}
