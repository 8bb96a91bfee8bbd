use super::*;

fn accept(settings: &PerMessageDeflate, offer: &str) -> Option<(Negotiated, String)> {
    settings.server_accept([offer.as_bytes()])
}

/// zlib's defaults: 15-bit windows, context takeover.
fn full() -> PerMessageDeflate {
    PerMessageDeflate::default()
        .server_max_window_bits(15)
        .client_max_window_bits(15)
        .server_no_context_takeover(false)
        .client_no_context_takeover(false)
}

/// ferrosock's default windows, with context takeover.
fn takeover() -> PerMessageDeflate {
    PerMessageDeflate::default()
        .server_no_context_takeover(false)
        .client_no_context_takeover(false)
}

#[test]
fn the_server_negotiation_table() {
    // (settings, offer) → response; every parameter, alone and together.
    let d = takeover();
    let cases: &[(&PerMessageDeflate, &str, Option<&str>)] = &[
        (&full(), "permessage-deflate", Some("permessage-deflate")),
        (&d, "permessage-deflate", Some("permessage-deflate; server_max_window_bits=12")),
        (&full(), "permessage-deflate; client_max_window_bits", Some("permessage-deflate")),
        (&d, "permessage-deflate; client_max_window_bits", Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")),
        (&full(), "permessage-deflate; client_max_window_bits=10", Some("permessage-deflate; client_max_window_bits=10")),
        (&d, "permessage-deflate; client_max_window_bits=9", Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=9")),
        (&full(), "permessage-deflate; server_max_window_bits=10", Some("permessage-deflate; server_max_window_bits=10")),
        (&d, "permessage-deflate; server_max_window_bits=15", Some("permessage-deflate; server_max_window_bits=12")),
        (&full(), "permessage-deflate; server_max_window_bits=8", Some("permessage-deflate; server_max_window_bits=8")),
        (&full(), "permessage-deflate; server_no_context_takeover", Some("permessage-deflate; server_no_context_takeover")),
        (&full(), "permessage-deflate; client_no_context_takeover", Some("permessage-deflate; client_no_context_takeover")),
        (&full().server_no_context_takeover(true).client_no_context_takeover(true), "permessage-deflate",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")),
        (&full(), "permessage-deflate; server_max_window_bits=\"9\"; CLIENT_MAX_WINDOW_BITS", Some("permessage-deflate; server_max_window_bits=9")),
        // Malformed or duplicate parameters decline that offer; the next one is accepted.
        (&full(), "permessage-deflate; server_max_window_bits=16, permessage-deflate", Some("permessage-deflate")),
        (&full(), "permessage-deflate; server_max_window_bits=7", None),
        (&full(), "permessage-deflate; server_max_window_bits=010", None),
        (&full(), "permessage-deflate; server_max_window_bits", None),
        (&full(), "permessage-deflate; client_max_window_bits=abc", None),
        (&full(), "permessage-deflate; server_no_context_takeover=1", None),
        (&full(), "permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        (&full(), "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11", None),
        (&full(), "permessage-deflate; mystery", None),
        (&full(), "x-webkit-deflate-frame", None),
        (&full(), "foo, permessage-deflate; client_max_window_bits=12", Some("permessage-deflate; client_max_window_bits=12")),
        (&full(), "permessage-deflate; server_max_window_bits=\"1", None),
        (&PerMessageDeflate::disabled(), "permessage-deflate", None),
        // The defaults: no context takeover either way, 12-bit windows.
        (&PerMessageDeflate::default(), "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12")),
    ];
    for (settings, offer, expected) in cases {
        let got = accept(settings, offer).map(|(_, response)| response);
        assert_eq!(got.as_deref(), *expected, "offer {offer:?}");
    }
}

#[test]
fn what_the_server_agrees_to() {
    let (agreed, _) = accept(&takeover(), "permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(
        agreed,
        Negotiated {
            compress_window_bits: 12,
            compress_reset: false,
            decompress_window_bits: 12,
            decompress_reset: false
        }
    );
    // A client that cannot limit its window may use 15 bits: decompress at 15.
    let (agreed, _) = accept(
        &takeover(),
        "permessage-deflate; client_no_context_takeover",
    )
    .unwrap();
    assert_eq!(
        (agreed.decompress_window_bits, agreed.decompress_reset),
        (15, true)
    );
    // The defaults reset both ways.
    let (agreed, _) = accept(&PerMessageDeflate::default(), "permessage-deflate").unwrap();
    assert!(agreed.compress_reset && agreed.decompress_reset);
}

#[test]
fn the_client_checks_the_response_against_its_offer() {
    let d = takeover();
    let ok = |settings: &PerMessageDeflate, response: &str| {
        settings.client_accept([response.as_bytes()])
    };
    assert_eq!(
        ok(&d, "permessage-deflate; server_max_window_bits=12").unwrap(),
        Negotiated {
            compress_window_bits: 12,
            compress_reset: false,
            decompress_window_bits: 12,
            decompress_reset: false
        }
    );
    assert_eq!(
        ok(&d, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8; client_no_context_takeover; server_no_context_takeover").unwrap(),
        Negotiated { compress_window_bits: 8, compress_reset: true, decompress_window_bits: 9, decompress_reset: true }
    );
    assert_eq!(
        ok(&full(), "permessage-deflate")
            .unwrap()
            .decompress_window_bits,
        15
    );
    // A server may answer a larger client window than promised: the client keeps its own.
    assert_eq!(
        ok(
            &d,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"
        )
        .unwrap()
        .compress_window_bits,
        12
    );
    // The fallback offer: the server asked for client_no_context_takeover.
    let fallback = ok(
        &d,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
    )
    .unwrap();
    assert!(fallback.compress_reset);
    for bad in [
        "permessage-deflate; server_max_window_bits=13", // more than offered
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits", // no value
        "permessage-deflate; server_max_window_bits=12; bogus",
        "permessage-deflate; server_max_window_bits=12, permessage-deflate",
        "x-other",
    ] {
        assert!(ok(&d, bad).is_err(), "{bad}");
    }
    let asks_reset = full().server_no_context_takeover(true);
    assert!(
        ok(
            &asks_reset,
            "permessage-deflate; server_no_context_takeover"
        )
        .unwrap()
        .decompress_reset
    );
    // The defaults: both resets are part of the one offer.
    let defaults = PerMessageDeflate::default();
    let agreed = ok(
        &defaults,
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
    )
    .unwrap();
    assert!(agreed.compress_reset && agreed.decompress_reset);
}

/// uWebSockets' servers answer the default offer without its server-side parameters
/// (`../shared/tools/uws/uws_echo_deflate`): the client decompresses what the answer says
/// the server does — a 15-bit window kept between messages — and keeps compressing its
/// own messages as it offered (no context takeover, 12 bits).
#[test]
fn a_server_that_leaves_out_the_server_parameters_is_decompressed_with_its_defaults() {
    let defaults = PerMessageDeflate::default();
    for answer in [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=12", // context kept
        "permessage-deflate; server_no_context_takeover", // 15-bit window
    ] {
        let agreed = defaults.client_accept([answer.as_bytes()]).unwrap();
        assert_eq!(
            (agreed.compress_window_bits, agreed.compress_reset),
            (12, true),
            "{answer}: this side compresses as it offered"
        );
        let expected_bits = if answer.contains("server_max_window_bits=12") {
            12
        } else {
            15
        };
        assert_eq!(agreed.decompress_window_bits, expected_bits, "{answer}");
        assert_eq!(
            agreed.decompress_reset,
            answer.contains("server_no_context_takeover"),
            "{answer}"
        );
    }
    for still_bad in [
        "permessage-deflate; server_max_window_bits=14", // more than the 12 asked
        "permessage-deflate; client_max_window_bits",    // no value in an answer
    ] {
        assert!(
            defaults.client_accept([still_bad.as_bytes()]).is_err(),
            "{still_bad}"
        );
    }
}
