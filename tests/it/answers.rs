//! Answers at the edges: the file server's own refusals as problems, and `?time=` far past the
//! end.

use crate::support;

use support::{TestServer, assert_problem, settings};

#[tokio::test]
async fn the_file_servers_refusals_are_problems() {
    let server = TestServer::start(settings("")).await;
    let url = server.url("/local/multi-rendition/river_small_000001.jpg");
    for range in ["bytes=0-1,5-6", "bytes=99999-"] {
        let answer = server
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()["content-range"], "bytes */2500", "{range}");
        assert_problem(answer, 416, "range-not-satisfiable").await;
    }
    let answer = server
        .client
        .get(&url)
        .header("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_problem(answer, 412, "precondition-failed").await;
    // One range is still served.
    let answer = server
        .client
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 206);
    assert_eq!(answer.headers()["content-type"], "image/jpeg");
    assert_eq!(answer.bytes().await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_time_far_past_the_end_picks_the_last_thumbnail() {
    let server = TestServer::start(settings("")).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (time, expected) in [
        ("P99999999999999999999D", "Thumbnail000010.jpg"),
        ("PT99999S", "Thumbnail000010.jpg"),
        ("1e3", ""),
        ("PT17S", "Thumbnail000009.jpg"),
        ("0", "Thumbnail000001.jpg"),
    ] {
        let answer = client
            .get(server.url(&format!("/assets/sprite-storyboard/poster?time={time}")))
            .send()
            .await
            .unwrap();
        if expected.is_empty() {
            assert_eq!(answer.status(), 400, "{time}");
            continue;
        }
        assert_eq!(answer.status(), 302, "{time}");
        let location = answer.headers()["location"].to_str().unwrap();
        assert!(location.ends_with(expected), "{time}: {location}");
    }
}
