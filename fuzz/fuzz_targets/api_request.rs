//! Any bytes as what a client sends the daemon's API socket: the framing
//! cuts them into lines (or refuses a line that runs past the limit), and
//! each line parses into a request or an error, never a panic. A request
//! that parses goes back on the wire as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vzhost::daemon::{
    api::Request,
    channel::{Frames, MAX_MESSAGE},
};

fuzz_target!(|data: &[u8]| {
    let mut frames = Frames::default();
    // The bytes arrive in two pieces, cut where the first byte says.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    for piece in [&data[..cut], &data[cut..]] {
        frames.push(piece);
        loop {
            match frames.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= MAX_MESSAGE && !line.contains(&b'\n'));
                    let Ok(request) = serde_json::from_slice::<Request>(&line) else {
                        continue;
                    };
                    let _ = (request.op(), request.vps());
                    let wire = serde_json::to_string(&request).expect("a request serializes");
                    let again: Request = serde_json::from_str(&wire).expect("a request reads back");
                    assert_eq!(serde_json::to_string(&again).unwrap(), wire);
                }
                Ok(None) => break,
                // Refused: the daemon answers `invalid` and hangs up.
                Err(_) => return,
            }
        }
    }
});
