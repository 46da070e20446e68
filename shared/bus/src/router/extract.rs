//! The extractors a handler takes its arguments through, and the handler trait.

use std::future::Future;
use std::pin::Pin;

use crate::HandlerError;

/// The application state, cloned into each handler call.
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

/// The decoded message.
#[derive(Debug, Clone)]
pub struct Msg<M>(pub M);

/// What the bus knows about a delivery.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The outbox id (or the publisher's `Nats-Msg-Id`): stable across redeliveries.
    pub message_id: String,
    /// Subject relative to the namespace, e.g. `events.journal_entry.created`.
    pub subject: String,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// JetStream stream sequence (none when re-driven from the dead letters).
    pub stream_sequence: Option<u64>,
    /// When the message was emitted (epoch microseconds), if the publisher said.
    pub emitted_at_micros: Option<i64>,
    /// The consumer/handler name.
    pub handler: String,
}

/// Builds one of a handler's arguments from a delivery.
pub trait FromDelivery<M, S>: Sized {
    fn from_delivery(message: &M, meta: &Meta, state: &S) -> Self;
}

impl<M, S: Clone> FromDelivery<M, S> for State<S> {
    fn from_delivery(_: &M, _: &Meta, state: &S) -> Self {
        State(state.clone())
    }
}

impl<M: Clone, S> FromDelivery<M, S> for Msg<M> {
    fn from_delivery(message: &M, _: &Meta, _: &S) -> Self {
        Msg(message.clone())
    }
}

impl<M, S> FromDelivery<M, S> for Meta {
    fn from_delivery(_: &M, meta: &Meta, _: &S) -> Self {
        meta.clone()
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A plain async fn whose arguments are all [`FromDelivery`] extractors.
pub trait Handler<M, S, Args>: Clone + Send + Sync + 'static {
    fn call(&self, message: M, meta: Meta, state: S) -> HandlerFuture;
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, M, S, $($arg,)*> Handler<M, S, ($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
            M: Send + 'static,
            S: Send + 'static,
            $($arg: FromDelivery<M, S> + Send,)*
        {
            #[allow(non_snake_case, unused_variables)]
            fn call(&self, message: M, meta: Meta, state: S) -> HandlerFuture {
                $(let $arg = $arg::from_delivery(&message, &meta, &state);)*
                Box::pin((self)($($arg),*))
            }
        }
    };
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);
