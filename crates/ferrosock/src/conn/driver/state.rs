//! The close handshake, failures, the end of the connection, and the timers.

use super::*;

impl<S, C> Driver<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    pub(super) fn on_close_frame(&mut self, frame: Option<CloseFrame>) {
        let code = frame.as_ref().map(|f| f.code);
        self.close_received = Some(frame);
        // Nothing after a close frame is read as frames (RFC 6455 §5.5.1).
        self.draining = true;
        self.drain_skip = None;
        self.read_buf = BytesMut::new();
        if !self.close_sent {
            // The peer started the close handshake: send what was queued, then echo its code.
            self.callbacks.shared().begin_closing(&mut self.staged);
            self.frame_staged();
            let payload = match code {
                Some(code) => crate::proto::close::encode_payload(code, ""),
                None => Bytes::new(),
            };
            self.queue_close_frame(payload, self.close_timeout);
        }
    }

    /// Starts the close handshake on the application's request, waiting `timeout` (or the
    /// connection's close timeout) for the peer's close frame.
    pub(super) fn start_close(&mut self, code: CloseCode, reason: &str, timeout: Option<Duration>) {
        if self.close_sent {
            return;
        }
        self.closed_here = true;
        let payload = crate::proto::close::encode_payload(code, reason);
        self.queue_close_frame(payload, timeout.unwrap_or(self.close_timeout));
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with `code` and `reason`, then the
    /// socket is closed; no more input is decoded. Frames already queued go out first, unless
    /// `discard_queued` (for a peer that does not read them). `cause` is kept for the local
    /// error report.
    pub(super) fn fail(
        &mut self,
        code: CloseCode,
        reason: &str,
        cause: String,
        discard_queued: bool,
    ) {
        if self.failure.is_some() {
            return;
        }
        if !self.draining {
            // Failed by a command (not by the decoder, which sets this itself): framing is
            // intact, the next frame starts after the one in progress.
            if self.drain_skip.is_none() {
                self.drain_skip = Some(self.decoder.frame_in_progress().unwrap_or(0));
            }
            self.draining = true;
        }
        if !self.close_sent {
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
        self.failure = Some(Ending {
            code,
            reason: crate::proto::close::truncate_reason(reason).to_owned(),
            was_clean: false,
            cause: Some(cause),
            closed_here: false,
        });
    }

    pub(super) fn queue_close_frame(&mut self, payload: Bytes, timeout: Duration) {
        self.queue_internal(OpCode::Close, payload);
        self.close_sent = true;
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
    pub(super) fn finished_ending(&mut self) -> Option<Ending> {
        if let Some(failure) = &self.failure {
            // Done once the peer has answered our close frame or hung up; until then, reading
            // on avoids resetting a connection whose last bytes it has not read.
            return (self.read_eof || self.close_seen_while_draining).then(|| failure.clone());
        }
        let frame = self.close_received.as_ref()?;
        if self.role == Role::Client && !self.read_eof {
            // RFC 6455 §7.1.1: the client waits for the server to close the TCP connection.
            self.draining = true;
            self.drain_skip = None;
            return None;
        }
        Some(clean_ending(frame))
    }

    /// The peer closed its side: whatever state the close handshake is in, the connection is over.
    pub(super) fn on_eof(&self) -> Ending {
        if let Some(failure) = &self.failure {
            return failure.clone();
        }
        match &self.close_received {
            Some(frame) if self.write_shutdown || self.out.is_empty() => clean_ending(frame),
            // The peer's close arrived and it hung up before our reply was written.
            Some(frame) => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            None => Ending::abnormal(if self.close_sent {
                "connection closed by the peer before its close frame"
            } else {
                "connection closed by the peer without a close frame"
            }),
        }
    }

    pub(super) fn io_failed(&mut self, err: &io::Error) -> Ending {
        match &self.failure {
            Some(failure) => failure.clone(),
            None => Ending::abnormal(format!("connection error: {err}")),
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
        if let Some(failure) = &self.failure {
            return failure.clone();
        }
        match &self.close_received {
            Some(frame) => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            None => Ending::abnormal(format!(
                "no close frame from the peer within {} s",
                self.close_wait.as_secs_f64()
            )),
        }
    }
}

/// The ending of a completed close handshake, from the peer's close frame.
pub(super) fn clean_ending(frame: &Option<CloseFrame>) -> Ending {
    match frame {
        Some(frame) => Ending {
            code: frame.code,
            reason: frame.reason.clone(),
            was_clean: true,
            cause: None,
            closed_here: false,
        },
        None => Ending {
            code: CloseCode::NO_STATUS,
            reason: String::new(),
            was_clean: true,
            cause: None,
            closed_here: false,
        },
    }
}
