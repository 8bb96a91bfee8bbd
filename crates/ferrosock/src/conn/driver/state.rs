//! The close handshake, failures, the end of the connection, and the timers.
//!
//! Where a connection is in its close handshake is one value, [`Close`], and every change of it
//! is made in one place, [`Driver::transition`], by one of the events of [`CloseEvent`]. The
//! rest of the driver asks it questions: whether input is decoded, skipped or thrown away,
//! whether a pong may still be sent, and how the connection ended.

use super::*;

/// Where a connection is in its close handshake.
#[derive(Debug)]
pub(super) enum Close {
    /// Messages flow both ways.
    Open,
    /// This side started the close handshake in good order (a `Close` command): our close
    /// frame is queued (or written), the peer's has not arrived, and the peer's messages are
    /// still decoded and delivered.
    Sent,
    /// The peer's close frame arrived: first (ours echoes it), or in answer to ours (`here`:
    /// then the end is this side's own).
    /// Nothing after it is read as frames (RFC 6455 §5.5.1).
    Received {
        frame: Option<Box<CloseFrame>>,
        here: bool,
    },
    /// We failed the connection: our close frame is queued (or written), and this is how the
    /// connection ends. Input is skipped frame by frame until the peer's close frame has
    /// arrived (`answered`) or it hangs up.
    Failed { ending: Box<Ending>, answered: bool },
    /// A handle aborted the connection: the socket is dropped without a close frame.
    Aborted,
}

/// What moves a connection through its close handshake.
#[derive(Debug)]
pub(super) enum CloseEvent {
    /// The application asks for the close handshake: `code` and `reason`, the peer's reply
    /// awaited for `timeout` (or the connection's close timeout).
    Close {
        code: CloseCode,
        reason: String,
        timeout: Option<Duration>,
    },
    /// The connection fails (RFC 6455 §7.1.7): a protocol error, a limit, a panicking callback.
    /// Frames already queued go out first, unless `discard_queued` (for a peer that does not
    /// read them). `cause` stays local.
    Fail {
        code: CloseCode,
        reason: String,
        cause: String,
        discard_queued: bool,
    },
    /// The peer's close frame arrived, while decoding or while skipping after a failure.
    PeerClose(Option<CloseFrame>),
    /// A handle aborts the connection.
    Abort,
}

/// What becomes of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// Frames are decoded and messages delivered.
    Decode,
    /// Frames are skipped by their headers, looking for the peer's close frame.
    Skip,
    /// Everything is thrown away (after the peer's close frame).
    Discard,
}

impl Close {
    /// Whether our close frame is queued: nothing may follow it.
    pub(super) fn sent(&self) -> bool {
        !matches!(self, Close::Open)
    }

    pub(super) fn reading(&self) -> Reading {
        match self {
            Close::Open | Close::Sent => Reading::Decode,
            Close::Failed {
                answered: false, ..
            } => Reading::Skip,
            Close::Received { .. } | Close::Failed { .. } | Close::Aborted => Reading::Discard,
        }
    }

    /// Whether messages may still be delivered: not once we failed the connection.
    pub(super) fn delivers(&self) -> bool {
        matches!(self, Close::Open | Close::Sent)
    }

    /// Whether this side owes the peer nothing more once its frames are written: it may
    /// half-close then.
    pub(super) fn owes_nothing(&self) -> bool {
        matches!(self, Close::Received { .. } | Close::Failed { .. })
    }

    /// Whether this side ended the connection in good order: a close it started, or an abort.
    /// A failure of ours is an error even while a close this side started was under way.
    pub(super) fn closed_here(&self) -> bool {
        match self {
            Close::Received { here, .. } => *here,
            Close::Sent | Close::Aborted => true,
            Close::Open | Close::Failed { .. } => false,
        }
    }
}

impl<S, C> Driver<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    /// Moves the close handshake on by `event`: every change of [`Close`] is made here.
    pub(super) fn transition(&mut self, event: CloseEvent) {
        let state = std::mem::replace(&mut self.close, Close::Open);
        self.close = match (state, event) {
            // Aborted is final. After a failure an abort ends the connection at once, but the
            // end stays an error: not this side's own (`closed_here` is false).
            (state @ (Close::Aborted | Close::Failed { .. }), CloseEvent::Abort) => state,
            (_, CloseEvent::Abort) => Close::Aborted,
            (state @ Close::Aborted, _) => state,

            (
                Close::Open,
                CloseEvent::Close {
                    code,
                    reason,
                    timeout,
                },
            ) => {
                let payload = crate::proto::close::encode_payload(code, &reason);
                self.queue_close_frame(payload, timeout.unwrap_or(self.close_timeout));
                Close::Sent
            }
            // Already closing: the first close wins.
            (state, CloseEvent::Close { .. }) => state,

            (Close::Open, CloseEvent::PeerClose(frame)) => {
                // The peer started the close handshake: send what was queued, then echo its
                // code.
                self.callbacks.shared().begin_closing(&mut self.staged);
                self.frame_staged();
                let payload = match frame.as_ref().map(|f| f.code) {
                    Some(code) => crate::proto::close::encode_payload(code, ""),
                    None => Bytes::new(),
                };
                self.queue_close_frame(payload, self.close_timeout);
                self.read_buf = BytesMut::new();
                Close::Received {
                    frame: frame.map(Box::new),
                    here: false,
                }
            }
            (Close::Sent, CloseEvent::PeerClose(frame)) => {
                self.read_buf = BytesMut::new();
                Close::Received {
                    frame: frame.map(Box::new),
                    here: true,
                }
            }
            // Skipping after a failure: the peer has read our close frame and answered.
            (Close::Failed { ending, .. }, CloseEvent::PeerClose(_)) => {
                self.read_buf = BytesMut::new();
                Close::Failed {
                    ending,
                    answered: true,
                }
            }
            // Nothing is decoded after the peer's close frame.
            (state @ Close::Received { .. }, CloseEvent::PeerClose(_)) => state,

            (
                state @ (Close::Open | Close::Sent | Close::Received { .. }),
                CloseEvent::Fail {
                    code,
                    reason,
                    cause,
                    discard_queued,
                },
            ) => {
                // Framing is intact: the next frame starts after the one in progress. After the
                // peer's close frame nothing is left to decode, and its reply is not awaited
                // again: the end waits for its EOF (or the close timeout), as a failure does.
                self.decoder.start_skipping();
                if !state.sent() {
                    self.queue_failure(code, &reason, discard_queued);
                }
                let ending = Box::new(Ending {
                    code,
                    reason: crate::proto::close::truncate_reason(&reason).to_owned(),
                    was_clean: false,
                    cause: Some(cause),
                    closed_here: false,
                    traffic: Traffic::default(),
                });
                Close::Failed {
                    ending,
                    answered: false,
                }
            }
            // The first failure is the one reported.
            (state @ Close::Failed { .. }, CloseEvent::Fail { .. }) => state,
        };
    }

    /// Queues the close frame of a failure, after the frames queued so far, or instead of them
    /// with `discard_queued`.
    fn queue_failure(&mut self, code: CloseCode, reason: &str, discard_queued: bool) {
        self.callbacks.shared().begin_closing(&mut self.staged);
        if discard_queued {
            let dropped: usize = self.staged.drain(..).map(|q| q.item.cost()).sum();
            self.callbacks.shared().release(dropped);
        }
        self.frame_staged();
        if discard_queued {
            // A frame partly written must be finished, or the stream would be corrupt.
            let keep = usize::from(self.out_pos > 0);
            let dropped: usize = self
                .out
                .drain(keep..)
                .map(|q| cost(q.item.payload().len()))
                .sum();
            self.callbacks.shared().release(dropped);
            shrink_if_drained(&mut self.out);
        }
        let payload = crate::proto::close::encode_payload(code, reason);
        self.queue_close_frame(payload, self.close_timeout);
    }

    /// Fails the connection: see [`CloseEvent::Fail`].
    pub(super) fn fail(
        &mut self,
        code: CloseCode,
        reason: &str,
        cause: String,
        discard_queued: bool,
    ) {
        self.transition(CloseEvent::Fail {
            code,
            reason: reason.to_owned(),
            cause,
            discard_queued,
        });
    }

    pub(super) fn queue_close_frame(&mut self, payload: Bytes, timeout: Duration) {
        self.queue_internal(OpCode::Close, payload);
        self.close_wait = timeout;
        let deadline = deadline_after(timeout);
        self.close_deadline = Some(deadline);
        self.arm(deadline);
    }

    /// Sets the timer to fire at `at`.
    pub(super) fn arm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.timer_registered = false;
    }

    /// The ending once our write side is shut, if nothing more needs to be read.
    pub(super) fn finished_ending(&self) -> Option<Ending> {
        match &self.close {
            // Done once the peer has answered our close frame or hung up; until then, reading
            // on avoids resetting a connection whose last bytes it has not read.
            Close::Failed { ending, answered } => {
                (self.read_eof || *answered).then(|| (**ending).clone())
            }
            // RFC 6455 §7.1.1: the client waits for the server to close the TCP connection.
            Close::Received { .. } if self.role == Role::Client && !self.read_eof => None,
            Close::Received { frame, .. } => Some(clean_ending(frame)),
            Close::Open | Close::Sent | Close::Aborted => None,
        }
    }

    /// The peer closed its side: whatever state the close handshake is in, the connection is over.
    pub(super) fn on_eof(&self) -> Ending {
        match &self.close {
            Close::Failed { ending, .. } => (**ending).clone(),
            Close::Received { frame, .. } if self.write_shutdown || self.out.is_empty() => {
                clean_ending(frame)
            }
            // The peer's close arrived and it hung up before our reply was written.
            Close::Received { frame, .. } => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            Close::Sent => Ending::abnormal("connection closed by the peer before its close frame"),
            Close::Open | Close::Aborted => {
                Ending::abnormal("connection closed by the peer without a close frame")
            }
        }
    }

    /// Reading or writing failed. After the peer's close frame, the connection ends as an EOF
    /// would end it (RFC 6455 §7.1.5: the close code is the peer's): a reset once both close
    /// frames crossed — an HTTP/2 server that drops its connection after its close, say — takes
    /// nothing from a completed close handshake.
    pub(super) fn io_failed(&self, err: &io::Error) -> Ending {
        match &self.close {
            Close::Failed { ending, .. } => (**ending).clone(),
            Close::Received { .. } => self.on_eof(),
            _ => Ending::abnormal(format!("connection error: {err}")),
        }
    }

    /// `Ready(Some)`: the connection ends. `Ready(None)`: the timer did something.
    pub(super) fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Ending>> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        if self.timer_registered && !timer.is_elapsed() {
            return Poll::Pending;
        }
        // Registers the waker after the timer was armed, or observes that it fired.
        if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
            self.timer_registered = true;
            return Poll::Pending;
        }
        let now = Instant::now();
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                return Poll::Ready(Some(self.close_timed_out()));
            }
            self.arm(deadline);
            return Poll::Ready(None);
        }
        let Some(tick) = self.tick else {
            // Only the close deadline arms the timer without a tick, and it is handled above.
            return Poll::Pending;
        };
        if std::mem::take(&mut self.heard) {
            self.silent = 0;
        } else {
            self.silent = self.silent.saturating_add(1);
        }
        if self.idle_ticks > 0 && self.silent >= self.idle_ticks {
            return Poll::Ready(Some(Ending::abnormal(format!(
                "no data from the peer for {} s (idle timeout)",
                (tick * self.silent).as_secs_f64()
            ))));
        }
        if self.keepalive_ticks > 0 && !self.ping_outstanding && self.silent >= self.keepalive_ticks
        {
            self.ping_outstanding = true;
            self.queue_internal(OpCode::Ping, Bytes::from_static(b"ferrosock"));
        }
        self.arm(now + tick);
        Poll::Ready(None)
    }

    pub(super) fn close_timed_out(&self) -> Ending {
        match &self.close {
            Close::Failed { ending, .. } => (**ending).clone(),
            Close::Received { frame, .. } => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            _ => Ending::abnormal(format!(
                "no close frame from the peer within {} s",
                self.close_wait.as_secs_f64()
            )),
        }
    }
}

/// The ending of a completed close handshake, from the peer's close frame.
pub(super) fn clean_ending(frame: &Option<Box<CloseFrame>>) -> Ending {
    match frame.as_deref() {
        Some(frame) => Ending {
            code: frame.code,
            reason: frame.reason.clone(),
            was_clean: true,
            cause: None,
            closed_here: false,
            traffic: Traffic::default(),
        },
        None => Ending {
            code: CloseCode::NO_STATUS,
            reason: String::new(),
            was_clean: true,
            cause: None,
            closed_here: false,
            traffic: Traffic::default(),
        },
    }
}
