//! Import forwarding for frozen contract versions: their imports have the same shape as
//! the newest version's, so each one converts its records and calls the newest
//! implementation in `runtime::imports`. Expanded inside each frozen version's module.

/// Expands to the host import impls of the calling module's version (`wit`, `http`, ...),
/// forwarding to `latest`. `forward_imports!(send_all)` adds `http.send-all` (0.4).
macro_rules! forward_imports {
    () => {
        $crate::runtime::bindings::forward::forward_imports!(@common);

        impl http::Host for HostState {
            $crate::runtime::bindings::forward::forward_imports!(@send);
        }
    };
    (send_all) => {
        $crate::runtime::bindings::forward::forward_imports!(@common);

        impl http::Host for HostState {
            $crate::runtime::bindings::forward::forward_imports!(@send);

            async fn send_all(
                &mut self,
                reqs: Vec<http::Request>,
            ) -> Vec<Result<http::Response, http::HttpError>> {
                use latest::operator::subject::http as new;
                let reqs = reqs.into_iter().map(request_to_latest).collect();
                new::Host::send_all(self, reqs)
                    .await
                    .into_iter()
                    .map(response_from_latest)
                    .collect()
            }
        }
    };
    (@send) => {
        async fn send(&mut self, req: http::Request) -> Result<http::Response, http::HttpError> {
            use latest::operator::subject::http as new;
            response_from_latest(new::Host::send(self, request_to_latest(req)).await)
        }
    };
    (@common) => {
        impl wit::Host for HostState {}

        fn kv_to_latest(kv: wit::Kv) -> latest::wit::Kv {
            latest::wit::Kv {
                key: kv.key,
                value: kv.value,
            }
        }

        fn kv_from_latest(kv: latest::wit::Kv) -> wit::Kv {
            wit::Kv {
                key: kv.key,
                value: kv.value,
            }
        }

        fn request_to_latest(
            req: http::Request,
        ) -> latest::operator::subject::http::Request {
            latest::operator::subject::http::Request {
                method: req.method,
                url: req.url,
                headers: req.headers.into_iter().map(kv_to_latest).collect(),
                body: req.body,
                timeout_ms: req.timeout_ms,
            }
        }

        fn response_from_latest(
            r: Result<
                latest::operator::subject::http::Response,
                latest::operator::subject::http::HttpError,
            >,
        ) -> Result<http::Response, http::HttpError> {
            use latest::operator::subject::http as new;
            match r {
                Ok(r) => Ok(http::Response {
                    status: r.status,
                    headers: r.headers.into_iter().map(kv_from_latest).collect(),
                    body: r.body,
                }),
                Err(e) => Err(match e {
                    new::HttpError::Denied(m) => http::HttpError::Denied(m),
                    new::HttpError::Timeout => http::HttpError::Timeout,
                    new::HttpError::Connect(m) => http::HttpError::Connect(m),
                    new::HttpError::Invalid(m) => http::HttpError::Invalid(m),
                    new::HttpError::TooLarge(n) => http::HttpError::TooLarge(n),
                    new::HttpError::Other(m) => http::HttpError::Other(m),
                }),
            }
        }

        impl redis::Host for HostState {
            async fn command(
                &mut self,
                url: String,
                args: Vec<String>,
            ) -> Result<Vec<redis::RedisValue>, redis::RedisError> {
                use latest::operator::subject::redis as new;
                match new::Host::command(self, url, args).await {
                    Ok(values) => Ok(values
                        .into_iter()
                        .map(|v| match v {
                            new::RedisValue::Nil => redis::RedisValue::Nil,
                            new::RedisValue::Status(s) => redis::RedisValue::Status(s),
                            new::RedisValue::Int(i) => redis::RedisValue::Int(i),
                            new::RedisValue::Bulk(b) => redis::RedisValue::Bulk(b),
                            new::RedisValue::Array(n) => redis::RedisValue::Array(n),
                        })
                        .collect()),
                    Err(e) => Err(match e {
                        new::RedisError::Denied(m) => redis::RedisError::Denied(m),
                        new::RedisError::Connect(m) => redis::RedisError::Connect(m),
                        new::RedisError::Timeout => redis::RedisError::Timeout,
                        new::RedisError::Server(m) => redis::RedisError::Server(m),
                        new::RedisError::Other(m) => redis::RedisError::Other(m),
                    }),
                }
            }
        }

        impl logs::Host for HostState {
            async fn tail(&mut self, component: String, lines: u32) -> Result<Vec<String>, String> {
                latest::operator::subject::logs::Host::tail(self, component, lines).await
            }
        }

        impl log::Host for HostState {
            async fn log(&mut self, level: log::Level, message: String) {
                use latest::operator::subject::log as new;
                let level = match level {
                    log::Level::Trace => new::Level::Trace,
                    log::Level::Debug => new::Level::Debug,
                    log::Level::Info => new::Level::Info,
                    log::Level::Warn => new::Level::Warn,
                    log::Level::Error => new::Level::Error,
                };
                new::Host::log(self, level, message).await
            }
        }

        impl config::Host for HostState {
            async fn get(&mut self, key: String) -> Option<String> {
                latest::operator::subject::config::Host::get(self, key).await
            }

            async fn all(&mut self) -> Vec<wit::Kv> {
                latest::operator::subject::config::Host::all(self)
                    .await
                    .into_iter()
                    .map(kv_from_latest)
                    .collect()
            }
        }
    };
}

pub(crate) use forward_imports;
