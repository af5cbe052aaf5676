//! `POST /listMessages`: the caller's messages in one box, ordered by arrival
//! (`created_at`, then `messageId`), paged with optional `limit`/`offset` (alias `skip`) body
//! fields and cut at the listing byte budget (the rules: `domain::requests`).
//!
//! The answer is 1.1.5's `{"status":"success","messages":[…]}` unless the request paged or
//! the page was cut (by its limit or the budget); then `limit`, `offset`, `nextOffset` and
//! `hasMore` follow `messages`, as the newer upstream answers. The items are written straight
//! into the answer's buffer: a page is held once.

use super::{Api, ApiError, Call, Reply};
use crate::domain::requests::ListRequest;

pub async fn handle(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let request = ListRequest::from_json(&call.body, &api.limits)?;
    let mut body = br#"{"status":"success","messages":["#.to_vec();
    let page = api.list_into(call.identity, &request, &mut body).await?;
    body.push(b']');
    if request.paged || page.has_more {
        let next = request.offset + page.count;
        let tail = format!(
            r#","limit":{},"offset":{},"nextOffset":{next},"hasMore":{}"#,
            request.limit, request.offset, page.has_more
        );
        body.extend_from_slice(tail.as_bytes());
    }
    body.push(b'}');
    Ok(Reply { status: 200, body, retry_after: None })
}
