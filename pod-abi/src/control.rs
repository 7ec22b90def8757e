//! Control messages from a stage1 host side to guest-init (kvm flavor: lines on COM2, guest
//! `/dev/ttyS1`). One message per line, `\n` or `\r` terminated; unknown lines are reported
//! and ignored, so newer hosts can talk to older guests.

/// Longest control line kept, in bytes (the rest of a longer line is dropped).
pub const MAX_LINE: usize = 256;

/// A control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMsg {
    /// Stop the pod gracefully, as SIGTERM to guest-init does.
    Stop,
}

impl ControlMsg {
    /// The message's word.
    pub fn word(self) -> &'static str {
        match self {
            ControlMsg::Stop => "stop",
        }
    }
    /// The line to send (`word\n`).
    pub fn line(self) -> Vec<u8> {
        format!("{}\n", self.word()).into_bytes()
    }
    /// The message a (trimmed) line carries, if known.
    pub fn parse(line: &str) -> Option<Self> {
        [ControlMsg::Stop]
            .into_iter()
            .find(|m| m.word() == line.trim())
    }
}

/// What one received line was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A known message.
    Msg(ControlMsg),
    /// A non-empty line this side does not know (trimmed, lossy UTF-8).
    Unknown(String),
}

/// Splits a byte stream into control lines.
#[derive(Debug, Default)]
pub struct LineDecoder {
    line: Vec<u8>,
}

impl LineDecoder {
    /// Feeds bytes read from the channel; returns the complete lines they ended.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Received> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' || b == b'\r' {
                let text = String::from_utf8_lossy(&self.line).trim().to_string();
                self.line.clear();
                match ControlMsg::parse(&text) {
                    Some(m) => out.push(Received::Msg(m)),
                    None if !text.is_empty() => out.push(Received::Unknown(text)),
                    None => {}
                }
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_pieces() {
        let mut d = LineDecoder::default();
        assert_eq!(d.feed(b"st"), vec![]);
        assert_eq!(d.feed(b"op\r\n"), vec![Received::Msg(ControlMsg::Stop)]);
        assert_eq!(
            d.feed(b"hello\nstop\n"),
            vec![
                Received::Unknown("hello".into()),
                Received::Msg(ControlMsg::Stop)
            ]
        );
        assert_eq!(ControlMsg::Stop.line(), b"stop\n");
        let long = vec![b'x'; MAX_LINE * 2];
        d.feed(&long);
        assert_eq!(d.feed(b"\n"), vec![Received::Unknown("x".repeat(MAX_LINE))]);
    }
}
