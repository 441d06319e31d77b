//! Parsing a request line into a typed [`Route`], validating every parameter once. Bad input
//! becomes a [`RouteError`] here and never reaches the cache or the database.

use std::borrow::Cow;

use hyper::Method;

use crate::domain::{PagingDigits, ReviewOrder, DEFAULT_COUNT};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    ProductsList {
        page: u64,
        count: u64,
    },
    Product(i64),
    Styles(i64),
    Related(i64),
    Reviews {
        product_id: i64,
        page: u64,
        count: u64,
        order: ReviewOrder,
        /// Where `page` or `count` is past 2^64-1: both as written, for the echo.
        digits: Option<Box<PagingDigits>>,
    },
    ReviewsMeta {
        product_id: i64,
    },
    Questions {
        product_id: i64,
        page: u64,
        count: u64,
    },
    Answers {
        question_id: i64,
        page: u64,
        count: u64,
        /// Where `page` or `count` is past 2^64-1: both as written, for the echo.
        digits: Option<Box<PagingDigits>>,
    },
    Cart,
    PostReview,
    MarkReview {
        id: i64,
        mark: Mark,
    },
    /// `product_id` from the query string, used when the body has none.
    PostQuestion {
        product_id: Option<i64>,
    },
    MarkQuestion {
        id: i64,
        mark: Mark,
    },
    PostAnswer {
        question_id: i64,
    },
    MarkAnswer {
        id: i64,
        mark: Mark,
    },
    PostCart,
    PostInteraction,
    Healthz,
    Readyz,
    Metrics,
    /// The OpenAPI description of this API (`openapi.yaml`).
    OpenApi,
}

pub use crate::domain::Mark;

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 404: unknown path, or an id in the path that is not an `ID`.
    NotFound,
    /// 405, with the methods the path allows.
    MethodNotAllowed(&'static str),
    /// 422 `Error: invalid product_id provided`.
    InvalidProductId,
    /// 422: `page` or `count` is not an integer ≥ 1.
    InvalidPaging(&'static str),
}

/// Labels for metrics, one per route kind; `"unmatched"` is last.
pub const ROUTE_LABELS: [&str; 22] = [
    "products_list",
    "product",
    "styles",
    "related",
    "reviews",
    "reviews_meta",
    "questions",
    "answers",
    "cart",
    "post_review",
    "mark_review",
    "post_question",
    "mark_question",
    "post_answer",
    "mark_answer",
    "post_cart",
    "post_interaction",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "unmatched",
];

impl Route {
    /// Whether the route changes data (POST or PUT).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Route::PostReview
                | Route::MarkReview { .. }
                | Route::PostQuestion { .. }
                | Route::MarkQuestion { .. }
                | Route::PostAnswer { .. }
                | Route::MarkAnswer { .. }
                | Route::PostCart
                | Route::PostInteraction
        )
    }

    /// Index into [`ROUTE_LABELS`].
    pub fn label_index(&self) -> usize {
        match self {
            Route::ProductsList { .. } => 0,
            Route::Product(_) => 1,
            Route::Styles(_) => 2,
            Route::Related(_) => 3,
            Route::Reviews { .. } => 4,
            Route::ReviewsMeta { .. } => 5,
            Route::Questions { .. } => 6,
            Route::Answers { .. } => 7,
            Route::Cart => 8,
            Route::PostReview => 9,
            Route::MarkReview { .. } => 10,
            Route::PostQuestion { .. } => 11,
            Route::MarkQuestion { .. } => 12,
            Route::PostAnswer { .. } => 13,
            Route::MarkAnswer { .. } => 14,
            Route::PostCart => 15,
            Route::PostInteraction => 16,
            Route::Healthz => 17,
            Route::Readyz => 18,
            Route::Metrics => 19,
            Route::OpenApi => 20,
        }
    }
}

/// The hosted API's prefix, followed by a campus name: `/api/fec2/hr-rfp/products/1`.
const HOSTED_PREFIX: &str = "/api/fec2/";

/// Parses method, path and query. `HEAD` routes like `GET`; `OPTIONS` is answered before
/// routing.
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    let path = match path.strip_prefix(HOSTED_PREFIX) {
        Some(rest) => match rest.find('/') {
            Some(slash) if slash > 0 => &rest[slash..],
            _ => return Err(RouteError::NotFound),
        },
        None => path,
    };
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let path = path.strip_prefix('/').ok_or(RouteError::NotFound)?;
    // No route has more than four segments; a path with more is no route.
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in path.split('/') {
        *segments.get_mut(count).ok_or(RouteError::NotFound)? = segment;
        count += 1;
    }
    let q = Query(query.unwrap_or(""));
    let read = method == Method::GET || method == Method::HEAD;
    let allow = |allowed: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(RouteError::MethodNotAllowed(allowed))
        }
    };
    let get = || allow("GET, HEAD, OPTIONS", read);
    let put = || allow("PUT, OPTIONS", method == Method::PUT);
    let post = || allow("POST, OPTIONS", method == Method::POST);
    let get_or_post = || allow("GET, HEAD, POST, OPTIONS", read || method == Method::POST);
    let mark = |s: &str| match s {
        "helpful" => Ok(Mark::Helpful),
        "report" => Ok(Mark::Report),
        _ => Err(RouteError::NotFound),
    };

    match segments[..count] {
        ["products"] => {
            get()?;
            let Paging { page, count, .. } = q.paging()?;
            Ok(Route::ProductsList { page, count })
        }
        ["products", id] => {
            let id = path_id(id)?;
            get()?;
            Ok(Route::Product(id))
        }
        ["products", id, "styles"] => {
            let id = path_id(id)?;
            get()?;
            Ok(Route::Styles(id))
        }
        ["products", id, "related"] => {
            let id = path_id(id)?;
            get()?;
            Ok(Route::Related(id))
        }
        ["reviews"] => {
            get_or_post()?;
            if !read {
                return Ok(Route::PostReview);
            }
            let product_id = q.product_id()?;
            let Paging {
                page,
                count,
                digits,
            } = q.paging()?;
            let newest = q
                .get("sort")
                .is_some_and(|s| s.eq_ignore_ascii_case("newest"));
            let order = if newest {
                ReviewOrder::Newest
            } else {
                ReviewOrder::Helpful
            };
            Ok(Route::Reviews {
                product_id,
                page,
                count,
                order,
                digits,
            })
        }
        ["reviews", "meta"] => {
            get()?;
            Ok(Route::ReviewsMeta {
                product_id: q.product_id()?,
            })
        }
        ["reviews", id, action] => {
            let (id, mark) = (path_id(id)?, mark(action)?);
            put()?;
            Ok(Route::MarkReview { id, mark })
        }
        ["qa", "questions"] => {
            get_or_post()?;
            if !read {
                let product_id = q.get("product_id").as_deref().and_then(parse_id);
                return Ok(Route::PostQuestion { product_id });
            }
            let product_id = q.product_id()?;
            let Paging { page, count, .. } = q.paging()?;
            Ok(Route::Questions {
                product_id,
                page,
                count,
            })
        }
        ["qa", "questions", id, "answers"] => {
            let question_id = path_id(id)?;
            get_or_post()?;
            if !read {
                return Ok(Route::PostAnswer { question_id });
            }
            let Paging {
                page,
                count,
                digits,
            } = q.paging()?;
            Ok(Route::Answers {
                question_id,
                page,
                count,
                digits,
            })
        }
        ["qa", "questions", id, action] => {
            let (id, mark) = (path_id(id)?, mark(action)?);
            put()?;
            Ok(Route::MarkQuestion { id, mark })
        }
        ["qa", "answers", id, action] => {
            let (id, mark) = (path_id(id)?, mark(action)?);
            put()?;
            Ok(Route::MarkAnswer { id, mark })
        }
        ["cart"] => {
            get_or_post()?;
            Ok(if read { Route::Cart } else { Route::PostCart })
        }
        ["interactions"] => {
            post()?;
            Ok(Route::PostInteraction)
        }
        ["healthz"] => get().map(|_| Route::Healthz),
        ["readyz"] => get().map(|_| Route::Readyz),
        ["metrics"] => get().map(|_| Route::Metrics),
        ["openapi.yaml"] => get().map(|_| Route::OpenApi),
        _ => Err(RouteError::NotFound),
    }
}

/// An `ID`: a positive integer (1 ..= 2^63-1) in plain decimal digits.
pub fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|&v| v > 0)
}

/// An `ID` in a path segment, percent-decoded first: `/products/%31` is `/products/1`, since
/// RFC 3986 makes an escaped digit the digit itself (and web frameworks decode a path
/// parameter). The route's literal segments are matched as sent.
fn path_id(s: &str) -> Result<i64, RouteError> {
    parse_id(&percent_decode(s)).ok_or(RouteError::NotFound)
}

/// A raw query string; values are percent-decoded on access, the first occurrence wins.
struct Query<'a>(&'a str);

impl Query<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    fn product_id(&self) -> Result<i64, RouteError> {
        self.get("product_id")
            .as_deref()
            .and_then(parse_id)
            .ok_or(RouteError::InvalidProductId)
    }

    /// `page` (default 1) and `count` (default 5): integers ≥ 1. A number past 2^64-1 is
    /// 2^64-1 to the arithmetic (clients send huge counts to mean "all", and the contract says
    /// never to fail them), and then both are kept as written for the heads that echo them.
    fn paging(&self) -> Result<Paging, RouteError> {
        let number = |name: &'static str, default: u64| {
            let Some(v) = self.get(name) else {
                return Ok((default, None));
            };
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RouteError::InvalidPaging(name));
            }
            let digits = v.trim_start_matches('0');
            // All digits: parsing fails only past u64::MAX.
            match digits.parse::<u64>() {
                _ if digits.is_empty() => Err(RouteError::InvalidPaging(name)),
                Ok(n) => Ok((n, None)),
                Err(_) => Ok((u64::MAX, Some(Box::<str>::from(digits)))),
            }
        };
        let ((page, page_past), (count, count_past)) =
            (number("page", 1)?, number("count", DEFAULT_COUNT)?);
        let digits = match (page_past, count_past) {
            (None, None) => None,
            (page_past, count_past) => Some(Box::new(PagingDigits {
                page: page_past.unwrap_or_else(|| page.to_string().into()),
                count: count_past.unwrap_or_else(|| count.to_string().into()),
            })),
        };
        Ok(Paging {
            page,
            count,
            digits,
        })
    }
}

/// A request's `page` and `count` ([`Query::paging`]).
struct Paging {
    page: u64,
    count: u64,
    digits: Option<Box<PagingDigits>>,
}

/// Decodes `%XX` escapes and `+` (a space in form encoding); invalid escapes stay as written.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: Option<&str>) -> Result<Route, RouteError> {
        parse(&Method::GET, path, query)
    }

    #[test]
    fn routes_with_prefix_and_trailing_slash() {
        assert_eq!(get("/products/1", None), Ok(Route::Product(1)));
        assert_eq!(get("/products/1/", None), Ok(Route::Product(1)));
        assert_eq!(
            get("/api/fec2/hr-rfp/products/1/styles", None),
            Ok(Route::Styles(1))
        );
        assert_eq!(get("/api/fec2/hr-rfp/", None), Err(RouteError::NotFound));
        assert_eq!(get("/products/0", None), Err(RouteError::NotFound));
        assert_eq!(get("/products/abc", None), Err(RouteError::NotFound));
        assert_eq!(
            get("/products/9223372036854775808", None),
            Err(RouteError::NotFound)
        );
        assert_eq!(get("//products", None), Err(RouteError::NotFound));
        assert_eq!(get("/products/%31", None), Ok(Route::Product(1)));
        assert_eq!(
            parse(&Method::PUT, "/qa/answers/1%32/helpful", None),
            Ok(Route::MarkAnswer {
                id: 12,
                mark: Mark::Helpful
            })
        );
        for bad in ["%30", "%2B1", "+1", "%31%", "1%2F", "%"] {
            assert_eq!(
                get(&format!("/products/{bad}"), None),
                Err(RouteError::NotFound),
                "{bad}"
            );
        }
        assert_eq!(get("/%70roducts/1", None), Err(RouteError::NotFound));
        // The longest routes have four segments; one more is no route, whatever it says.
        assert_eq!(
            get("/qa/questions/1/answers", None),
            Ok(Route::Answers {
                question_id: 1,
                page: 1,
                count: 5,
                digits: None
            })
        );
        assert_eq!(
            get("/qa/questions/1/answers/more", None),
            Err(RouteError::NotFound)
        );
        assert_eq!(get("/a/b/c/d/e/f/g/h", None), Err(RouteError::NotFound));
        assert_eq!(
            get(
                "/reviews/",
                Some("product_id=2&sort=NEWEST&count=9007199254740991")
            ),
            Ok(Route::Reviews {
                product_id: 2,
                page: 1,
                count: 9_007_199_254_740_991,
                order: ReviewOrder::Newest,
                digits: None
            })
        );
    }

    #[test]
    fn validates_parameters() {
        for bad in ["hello", "null", "5.55", "-1", "0", "", "1e3", "%31x"] {
            assert_eq!(
                get("/reviews", Some(&format!("product_id={bad}"))),
                Err(RouteError::InvalidProductId),
                "{bad}"
            );
        }
        assert_eq!(
            get("/reviews/meta", None),
            Err(RouteError::InvalidProductId)
        );
        assert_eq!(
            get("/qa/questions", Some("product_id=1&page=0")),
            Err(RouteError::InvalidPaging("page"))
        );
        assert_eq!(
            get("/qa/questions", Some("product_id=1&count=x")),
            Err(RouteError::InvalidPaging("count"))
        );
        // Past 2^64-1, both are kept as written (without leading zeros) for the echo.
        assert_eq!(
            get(
                "/qa/questions/7/answers",
                Some("page=018446744073709551616&count=0042")
            ),
            Ok(Route::Answers {
                question_id: 7,
                page: u64::MAX,
                count: 42,
                digits: Some(Box::new(PagingDigits {
                    page: "18446744073709551616".into(),
                    count: "42".into()
                }))
            })
        );
        assert_eq!(
            get(
                "/reviews",
                Some("product_id=1&count=99999999999999999999999999999999")
            ),
            Ok(Route::Reviews {
                product_id: 1,
                page: 1,
                count: u64::MAX,
                order: ReviewOrder::Helpful,
                digits: Some(Box::new(PagingDigits {
                    page: "1".into(),
                    count: "99999999999999999999999999999999".into()
                }))
            })
        );
        assert!(matches!(
            get(
                "/reviews",
                Some("product_id=1&page=18446744073709551615&count=18446744073709551615")
            ),
            Ok(Route::Reviews { digits: None, .. })
        ));
        for empty in ["page=", "count=", "count", "page=&count=5"] {
            assert!(
                matches!(
                    get("/qa/questions/1/answers", Some(empty)),
                    Err(RouteError::InvalidPaging(_))
                ),
                "{empty}"
            );
        }
        // Escaped digits are digits, as in a path.
        assert!(matches!(
            get("/qa/questions/1/answers", Some("count=%35")),
            Ok(Route::Answers {
                count: 5,
                digits: None,
                ..
            })
        ));
        assert!(matches!(
            get("/qa/questions/1/answers", Some("page=%31%38446744073709551616")),
            Ok(Route::Answers { page: u64::MAX, digits: Some(d), .. }) if &*d.page == "18446744073709551616"
        ));
        for (huge, saturated) in [
            ("18446744073709551615", u64::MAX),
            ("18446744073709551616", u64::MAX),
            ("99999999999999999999999999999999", u64::MAX),
            ("000000000000000000000000000000042", 42),
        ] {
            assert_eq!(
                get(
                    "/qa/questions",
                    Some(&format!("product_id=1&page={huge}&count={huge}"))
                ),
                Ok(Route::Questions {
                    product_id: 1,
                    page: saturated,
                    count: saturated
                }),
                "{huge}"
            );
        }
        assert_eq!(
            get(
                "/qa/questions",
                Some("product_id=1&count=000000000000000000000000")
            ),
            Err(RouteError::InvalidPaging("count"))
        );
        assert_eq!(
            get("/qa/questions", Some("product_id=%31&sort=x")),
            Ok(Route::Questions {
                product_id: 1,
                page: 1,
                count: 5
            })
        );
    }

    #[test]
    fn methods() {
        assert_eq!(
            parse(&Method::POST, "/products/1", None),
            Err(RouteError::MethodNotAllowed("GET, HEAD, OPTIONS"))
        );
        assert_eq!(
            parse(&Method::HEAD, "/products/1", None),
            Ok(Route::Product(1))
        );
        assert_eq!(
            parse(&Method::PUT, "/qa/answers/3/report", None),
            Ok(Route::MarkAnswer {
                id: 3,
                mark: Mark::Report
            })
        );
        assert_eq!(
            parse(&Method::GET, "/reviews/3/helpful", None),
            Err(RouteError::MethodNotAllowed("PUT, OPTIONS"))
        );
        assert_eq!(
            parse(&Method::PUT, "/reviews/3/like", None),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse(&Method::DELETE, "/cart", None),
            Err(RouteError::MethodNotAllowed("GET, HEAD, POST, OPTIONS"))
        );
    }
}
