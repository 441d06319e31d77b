//! Every GET of the contract over real HTTP against the hand-made sample data set. The
//! expected bodies are written out by hand from the API reference (docs/api.md) and the
//! sample's CSV rows — never captured from the server.

mod common;

use common::{get, request, server_with_data};

fn unsplash(photo: &str, width: u32) -> String {
    format!("https://images.unsplash.com/photo-{photo}?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9&auto=format&fit=crop&w={width}&q=80")
}

fn style_photo(photo: &str, width: u32) -> String {
    format!(
        r#"{{"thumbnail_url":"{}","url":"{}"}}"#,
        unsplash(photo, 300),
        unsplash(photo, width)
    )
}

const NO_PHOTO: &str = r#"[{"thumbnail_url":null,"url":null}]"#;
const NO_SKU: &str = r#"{"null":{"quantity":null,"size":null}}"#;

const PRODUCT_1: &str = r#""id":1,"name":"Camo Onesie","slogan":"Blend in to your crowd","description":"The So Fatigues will wake you up and fit you in. This high energy camo will have you blending in to even the wildest surroundings.","category":"Jackets","default_price":"140.00""#;
const PRODUCT_3: &str = r#"{"id":3,"name":"Morning Joggers","slogan":"Make yourself a morning person","description":"Whether you're a morning person or not.  Whether you're gym bound or not.  Everyone looks good in joggers.","category":"Pants","default_price":"40.00"}"#;
const PRODUCT_4: &str = r#"{"id":4,"name":"Slacker's Slacks","slogan":"Comfortable for everything, or nothing","description":"I'll tell you how great they are after I nap for a bit.","category":"Pants","default_price":"65.00"}"#;

fn review_1() -> String {
    r#"{"review_id":1,"rating":5,"summary":"This product was great!","recommend":true,"response":null,"body":"I really did or did not like this product based on whether it was sustainably sourced.  Then I found out that its made from nothing at all.","date":"2020-07-30T03:41:21.467Z","reviewer_name":"funtime","helpfulness":8,"photos":[]}"#.into()
}

fn review_2() -> String {
    r#"{"review_id":2,"rating":4,"summary":"This product was ok!","recommend":false,"response":null,"body":"I really did not like this product solely because I am tiny and do not fit into it.","date":"2021-01-09T07:47:13.963Z","reviewer_name":"mymainstreammother","helpfulness":2,"photos":[]}"#.into()
}

fn review_3() -> String {
    format!(
        r#"{{"review_id":3,"rating":4,"summary":"I am liking these glasses","recommend":true,"response":"Glad you're enjoying the product!","body":"They are very dark.  But that's good because I'm in very sunny spots","date":"2020-12-30T10:57:31.021Z","reviewer_name":"bigbrotherbenjamin","helpfulness":8,"photos":[{{"id":2,"url":"{}"}},{{"id":3,"url":"{}"}}]}}"#,
        unsplash("1561693532-9ff59442a7db", 975),
        unsplash("1487349384428-12b47aca925e", 1650)
    )
}

fn review_4() -> String {
    r#"{"review_id":4,"rating":3,"summary":"Its ok, but \"meh\"","recommend":false,"response":null,"body":"They didn't live up to the hype, but they're fine, I guess, for the price.","date":"2020-12-20T02:15:25.823Z","reviewer_name":"shortandsweeet","helpfulness":8,"photos":[]}"#.into()
}

fn answer_5_photos() -> [String; 2] {
    [
        unsplash("1530519729491-aea5b51d1ee1", 1651),
        unsplash("1511127088257-53ccfcc769fa", 1650),
    ]
}

fn answer_2_photo() -> String {
    // Unquoted in answers_photos.csv.
    unsplash("1500603720222-eb7a1f997356", 1653)
}

#[tokio::test]
async fn products_list_and_detail() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;

    let r = get(a, "/products?page=2&count=2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, format!("[{PRODUCT_3},{PRODUCT_4}]"));

    let ids = |body: &str| -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&get(a, "/products").await.body), [1, 2, 3, 4, 5]);
    assert_eq!(
        ids(&get(a, "/products?count=9007199254740991").await.body),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        ids(&get(a, "/products?page=4&count=2").await.body),
        Vec::<i64>::new()
    );
    let far = get(a, "/products?page=9007199254740991&count=9007199254740991").await;
    assert_eq!((far.status, far.body.as_str()), (200, "[]"));

    assert_eq!(
        get(a, "/products/1").await.body,
        format!(
            r#"{{{PRODUCT_1},"features":[{{"feature":"Fabric","value":"Canvas"}},{{"feature":"Buttons","value":"Brass"}}]}}"#
        )
    );
    assert_eq!(
        get(a, "/products/2").await.body,
        r#"{"id":2,"name":"Bright Future Sunglasses","slogan":"You've got to wear shades","description":"Where you're going you might not need roads, but you definitely need some shades. Give those baby blues a rest and let the future shine bright on these timeless lenses.","category":"Accessories","default_price":"69.00","features":[{"feature":"Lenses","value":"Ultrasheen"},{"feature":"UV Protection","value":null},{"feature":"Frames","value":"LightCompose"}]}"#
    );
    // Features in id order although the file lists 9 before 8; quotes inside text.
    assert_eq!(
        get(a, "/products/5").await.body,
        r#"{"id":5,"name":"Heir Force Ones","slogan":"A sneaker dynasty","description":"Now where da boss at? \"Ova here!\" The sneaker, reinvented.","category":"Kicks","default_price":"99.00","features":[{"feature":"Material","value":"FullControlSkin"},{"feature":"Sole","value":"Rubber"},{"feature":"Stitching","value":"\"Double Stitch\""}]}"#
    );
    assert_eq!(
        get(a, "/products/6").await.body,
        r#"{"id":6,"name":"Pumped Up Kicks","slogan":"Faster than a just about anything","description":"The Pumped Up serves up crisp court style with a modern look, complete with high-top design.","category":"Kicks","default_price":"89.00","features":[]}"#
    );
    let missing = get(a, "/products/999999999").await;
    assert_eq!((missing.status, missing.body.as_str()), (404, "Not Found"));
    assert_eq!(
        missing.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn styles_with_placeholders_and_sku_order() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;

    let skus_1 = r#"{"1":{"quantity":8,"size":"XS"},"2":{"quantity":16,"size":"S"},"3":{"quantity":17,"size":"M"},"4":{"quantity":10,"size":"L"},"5":{"quantity":15,"size":"XL"},"6":{"quantity":4,"size":"XL"}}"#;
    let expected = format!(
        r#"{{"product_id":"1","results":[{{"style_id":1,"name":"Forest Green & Black","original_price":"140.00","sale_price":null,"default?":true,"photos":[{},{},{}],"skus":{skus_1}}},{{"style_id":2,"name":"Desert Brown & Tan","original_price":"140.00","sale_price":null,"default?":false,"photos":[{}],"skus":{{"7":{{"quantity":3,"size":"S"}}}}}},{{"style_id":3,"name":"Ocean Blue & Grey","original_price":"140.00","sale_price":"100.00","default?":false,"photos":{NO_PHOTO},"skus":{{"8":{{"quantity":0,"size":"M"}}}}}}]}}"#,
        style_photo("1501088430049-71c79fa3283e", 668),
        style_photo("1534011546717-407bced4d25c", 2734),
        style_photo("1549831243-a69a0b3d39e0", 775),
        style_photo("1548369937-47519962c11a", 1650),
    );
    assert_eq!(get(a, "/products/1/styles").await.body, expected);

    let expected = format!(
        r#"{{"product_id":"2","results":[{{"style_id":4,"name":"Black Lenses & Black Frame","original_price":"69.00","sale_price":null,"default?":false,"photos":[{}],"skus":{{"9":{{"quantity":22,"size":"One Size"}}}}}},{{"style_id":5,"name":"Black Lenses & Gold Frame","original_price":"69.00","sale_price":null,"default?":true,"photos":{NO_PHOTO},"skus":{NO_SKU}}}]}}"#,
        style_photo("1511499767150-a48a237f0083", 1650),
    );
    assert_eq!(get(a, "/products/2/styles").await.body, expected);

    // An unquoted photo row; the orphan photo of style 99 is gone.
    let expected = format!(
        r#"{{"product_id":"5","results":[{{"style_id":8,"name":"White & White","original_price":"99.00","sale_price":null,"default?":true,"photos":[{{"thumbnail_url":"https://images.unsplash.com/photo-1560769629-975ec94e6a86?w=300","url":"https://images.unsplash.com/photo-1560769629-975ec94e6a86?w=668"}}],"skus":{{"13":{{"quantity":11,"size":"7"}},"14":{{"quantity":9,"size":"7.5"}},"15":{{"quantity":0,"size":"8"}}}}}},{{"style_id":9,"name":"White & Red","original_price":"99.00","sale_price":null,"default?":false,"photos":{NO_PHOTO},"skus":{NO_SKU}}}]}}"#
    );
    assert_eq!(get(a, "/products/5/styles").await.body, expected);

    let r = get(a, "/products/3/styles").await.body;
    assert!(r.contains(r#""style_id":7,"name":"Goldenrod","original_price":"40.00","sale_price":"35.00","default?":false"#), "{r}");
    assert_eq!(
        get(a, "/products/6/styles").await.body,
        r#"{"product_id":"6","results":[]}"#
    );
    assert_eq!(
        get(a, "/products/4/styles").await.body,
        r#"{"product_id":"4","results":[]}"#
    );
    assert_eq!(get(a, "/products/77/styles").await.status, 404);
}

#[tokio::test]
async fn related_ids() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    assert_eq!(get(a, "/products/1/related").await.body, "[2,3,5]", "no 0");
    assert_eq!(
        get(a, "/products/2/related").await.body,
        "[1,3,3]",
        "row order, duplicate rows kept"
    );
    assert_eq!(
        get(a, "/products/5/related").await.body,
        "[4,6]",
        "no dangling 77"
    );
    assert_eq!(get(a, "/products/6/related").await.body, "[]");
    assert_eq!(get(a, "/products/77/related").await.status, 404);
}

#[tokio::test]
async fn reviews_in_every_order_and_page() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let page = |product: &str, page: u64, count: u64, items: &[String]| {
        format!(
            r#"{{"product":"{product}","page":{page},"count":{count},"results":[{}]}}"#,
            items.join(",")
        )
    };

    let relevant = page("1", 0, 5, &[review_1(), review_2()]);
    assert_eq!(get(a, "/reviews?product_id=1").await.body, relevant);
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=relevant").await.body,
        relevant
    );
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=helpful").await.body,
        relevant
    );
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=whatever").await.body,
        relevant
    );
    let newest = page("1", 0, 5, &[review_2(), review_1()]);
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=newest").await.body,
        newest
    );
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=NeWeSt").await.body,
        newest
    );

    // Review 5 is reported: never shown. 3 and 4 tie on helpfulness; newer first.
    assert_eq!(
        get(a, "/reviews?product_id=2").await.body,
        page("2", 0, 5, &[review_3(), review_4()])
    );
    assert_eq!(
        get(a, "/reviews?product_id=2&page=2&count=1").await.body,
        page("2", 1, 1, &[review_4()])
    );
    assert_eq!(
        get(a, "/reviews?product_id=2&page=3&count=1").await.body,
        page("2", 2, 1, &[])
    );
    assert_eq!(
        get(a, "/reviews?product_id=2&count=9007199254740991")
            .await
            .body,
        page("2", 0, 9_007_199_254_740_991, &[review_3(), review_4()])
    );
    assert_eq!(
        get(a, "/reviews?product_id=2&page=2&count=9007199254740991")
            .await
            .body,
        page("2", 9_007_199_254_740_991, 9_007_199_254_740_991, &[])
    );
    // (page - 1) * count overflows 64 bits and is still echoed exactly.
    assert_eq!(
        get(
            a,
            "/reviews?product_id=2&page=9007199254740991&count=9007199254740991"
        )
        .await
        .body,
        r#"{"product":"2","page":81129638414606654674191240921090,"count":9007199254740991,"results":[]}"#
    );
    // Past 2^64-1 too: a count is echoed as written (less its leading zeros), and the offset
    // is computed exactly.
    assert_eq!(
        get(a, "/reviews?product_id=2&count=0099999999999999999999")
            .await
            .body,
        page("2", 0, 5, &[review_3(), review_4()])
            .replace(r#""count":5"#, r#""count":99999999999999999999"#)
    );
    assert_eq!(
        get(a, "/reviews?product_id=2&page=18446744073709551616&count=1")
            .await
            .body,
        r#"{"product":"2","page":18446744073709551615,"count":1,"results":[]}"#
    );
    assert_eq!(
        get(
            a,
            "/reviews?product_id=2&page=99999999999999999999&count=99999999999999999999"
        )
        .await
        .body,
        r#"{"product":"2","page":9999999999999999999700000000000000000002,"count":99999999999999999999,"results":[]}"#
    );
    assert_eq!(
        get(a, "/reviews?product_id=6").await.body,
        page("6", 0, 5, &[])
    );
    assert_eq!(
        get(a, "/reviews?product_id=123456").await.body,
        page("123456", 0, 5, &[])
    );
}

#[tokio::test]
async fn reviews_meta() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    assert_eq!(
        get(a, "/reviews/meta?product_id=1").await.body,
        r#"{"product_id":"1","ratings":{"4":"1","5":"1"},"recommended":{"false":"1","true":"1"},"characteristics":{"Fit":{"id":1,"value":"4.0000000000000000"},"Length":{"id":2,"value":"3.5000000000000000"},"Comfort":{"id":3,"value":"5.0000000000000000"},"Quality":{"id":4,"value":"4.0000000000000000"}}}"#
    );
    // The reported review's 1 star and its Quality rating of 1 do not count.
    assert_eq!(
        get(a, "/reviews/meta?product_id=2").await.body,
        r#"{"product_id":"2","ratings":{"3":"1","4":"1"},"recommended":{"false":"1","true":"1"},"characteristics":{"Quality":{"id":5,"value":"4.5000000000000000"}}}"#
    );
    assert_eq!(
        get(a, "/reviews/meta?product_id=3").await.body,
        r#"{"product_id":"3","ratings":{"5":"1"},"recommended":{"false":"0","true":"1"},"characteristics":{"Size":{"id":6,"value":"3.0000000000000000"},"Width":{"id":7,"value":"3.0000000000000000"},"Comfort":{"id":8,"value":"5.0000000000000000"},"Quality":{"id":9,"value":"4.0000000000000000"}}}"#
    );
    assert_eq!(
        get(a, "/reviews/meta?product_id=4").await.body,
        r#"{"product_id":"4","ratings":{},"recommended":{"false":"0","true":"0"},"characteristics":{"Quality":{"id":10,"value":null}}}"#
    );
    assert_eq!(
        get(a, "/reviews/meta?product_id=9").await.body,
        r#"{"product_id":"9","ratings":{},"recommended":{"false":"0","true":"0"},"characteristics":{}}"#
    );
}

#[tokio::test]
async fn questions_and_answers() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let [p1, p2] = answer_5_photos();
    let answer_5 = format!(
        r#""5":{{"id":5,"body":"DONT BUY IT! It's bad for the environment","date":"2020-09-19T21:49:22.548Z","answerer_name":"metslover","helpfulness":8,"photos":["{p1}","{p2}"]}}"#
    );
    let answer_2 = format!(
        r#""2":{{"id":2,"body":"Something pretty soft but I can't be sure","date":"2020-09-13T09:49:20.555Z","answerer_name":"sillyguy","helpfulness":5,"photos":["{}"]}}"#,
        answer_2_photo()
    );
    let answer_1 = r#""1":{"id":1,"body":"Supposedly suede, but I think its synthetic","date":"2020-09-13T00:53:05.988Z","answerer_name":"sillyguy","helpfulness":1,"photos":[]}"#;
    let question_3 = r#"{"question_id":3,"question_body":"Does this product run big or small?","question_date":"2020-12-21T07:31:47.083Z","asker_name":"jbilas","question_helpfulness":8,"reported":false,"answers":{"4":{"id":4,"body":"It runs true to size.","date":"2021-01-07T06:13:20.000Z","answerer_name":"Seller","helpfulness":4,"photos":[]}}}"#;
    let question_4 = r#"{"question_id":4,"question_body":"How long does it last?","question_date":"2020-07-10T00:35:17.010Z","asker_name":"funnygirl","question_helpfulness":6,"reported":false,"answers":{"6":{"id":6,"body":"We are selling it here without any markup from the middleman!","date":"2020-08-28T10:27:01.169Z","answerer_name":"Seller","helpfulness":4,"photos":[]}}}"#;
    // Answer 3 is reported, and so is question 2.
    let question_1 = format!(
        r#"{{"question_id":1,"question_body":"What fabric is the top made of?","question_date":"2020-07-27T21:18:34.409Z","asker_name":"yankeelover","question_helpfulness":1,"reported":false,"answers":{{{answer_1},{answer_2},{answer_5}}}}}"#
    );
    assert_eq!(
        get(a, "/qa/questions?product_id=1").await.body,
        format!(r#"{{"product_id":"1","results":[{question_3},{question_4},{question_1}]}}"#)
    );
    assert_eq!(
        get(a, "/qa/questions?product_id=1&page=2&count=1")
            .await
            .body,
        format!(r#"{{"product_id":"1","results":[{question_4}]}}"#)
    );
    assert_eq!(
        get(a, "/qa/questions?product_id=4").await.body,
        r#"{"product_id":"4","results":[{"question_id":6,"question_body":"Why is this product cheaper here than other sites?","question_date":"2020-08-19T22:01:37.000Z","asker_name":"toofast","question_helpfulness":3,"reported":false,"answers":{}}]}"#
    );
    assert_eq!(
        get(a, "/qa/questions?product_id=9").await.body,
        r#"{"product_id":"9","results":[]}"#
    );

    let answers = format!(
        r#"{{"question":"1","page":1,"count":5,"results":[{{"answer_id":5,"body":"DONT BUY IT! It's bad for the environment","date":"2020-09-19T21:49:22.548Z","answerer_name":"metslover","helpfulness":8,"photos":[{{"id":1,"url":"{p1}"}},{{"id":2,"url":"{p2}"}}]}},{{"answer_id":2,"body":"Something pretty soft but I can't be sure","date":"2020-09-13T09:49:20.555Z","answerer_name":"sillyguy","helpfulness":5,"photos":[{{"id":3,"url":"{}"}}]}},{{"answer_id":1,"body":"Supposedly suede, but I think its synthetic","date":"2020-09-13T00:53:05.988Z","answerer_name":"sillyguy","helpfulness":1,"photos":[]}}]}}"#,
        answer_2_photo()
    );
    assert_eq!(get(a, "/qa/questions/1/answers").await.body, answers);
    assert_eq!(
        get(a, "/qa/questions/1/answers?count=18446744073709551616")
            .await
            .body,
        answers.replace(r#""count":5"#, r#""count":18446744073709551616"#),
        "a count past 2^64-1 is echoed as written"
    );
    assert_eq!(
        get(
            a,
            "/qa/questions/1/answers?page=99999999999999999999999&count=2"
        )
        .await
        .body,
        r#"{"question":"1","page":99999999999999999999999,"count":2,"results":[]}"#
    );
    assert_eq!(
        get(a, "/qa/questions/1/answers?page=2&count=2").await.body,
        r#"{"question":"1","page":2,"count":2,"results":[{"answer_id":1,"body":"Supposedly suede, but I think its synthetic","date":"2020-09-13T00:53:05.988Z","answerer_name":"sillyguy","helpfulness":1,"photos":[]}]}"#
    );
    assert_eq!(
        get(a, "/qa/questions/5/answers").await.body,
        r#"{"question":"5","page":1,"count":5,"results":[]}"#
    );
    let missing = get(a, "/qa/questions/999/answers").await;
    assert_eq!((missing.status, missing.body.as_str()), (404, "Not Found"));
}

#[tokio::test]
async fn global_rules() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let plain = get(a, "/products/1/related").await;
    assert_eq!(plain.header("access-control-allow-origin"), Some("*"));
    for path in [
        "/products/1/related/",
        "/api/fec2/hr-rfp/products/1/related",
        "/api/fec2/hr-nyc/products/1/related/",
    ] {
        let r = get(a, path).await;
        assert_eq!((r.status, r.body.as_str()), (200, "[2,3,5]"), "{path}");
    }
    assert_eq!(get(a, "/reviews/?product_id=2&count=1").await.status, 200);
    // A bad id in a path is an unknown path, whatever the method; methods are case-sensitive.
    assert_eq!(request(a, "POST", "/products/abc").await.status, 404);
    assert_eq!(request(a, "PUT", "/reviews/0/helpful").await.status, 404);
    let lower = request(a, "get", "/products/1").await;
    assert_eq!(
        (lower.status, lower.header("allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );

    let head = request(a, "HEAD", "/products/1").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    let full = get(a, "/products/1").await;
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );

    let preflight = request(a, "OPTIONS", "/reviews").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST, PUT, OPTIONS")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );

    for path in ["/reviews", "/reviews/meta", "/qa/questions"] {
        for bad in [
            "",
            "?product_id=hello",
            "?product_id=null",
            "?product_id=5.55",
            "?product_id=-1",
            "?product_id=0",
        ] {
            let r = get(a, &format!("{path}{bad}")).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (422, "Error: invalid product_id provided"),
                "{path}{bad}"
            );
        }
    }
    assert_eq!(get(a, "/reviews?product_id=1&page=0").await.status, 422);
    assert_eq!(get(a, "/reviews?product_id=1&count=abc").await.status, 422);
    assert_eq!(get(a, "/qa/questions/1/answers?count=-5").await.status, 422);

    for path in [
        "/nope",
        "/products/1/nope",
        "/products/abc",
        "/api/fec2/",
        "/qa",
    ] {
        let r = get(a, path).await;
        assert_eq!((r.status, r.body.as_str()), (404, "Not Found"), "{path}");
    }
    let wrong = request(a, "DELETE", "/products/1").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD, OPTIONS"));

    assert_eq!(get(a, "/cart").await.body, "[]");
    assert_eq!(get(a, "/healthz").await.status, 200);
    assert_eq!(
        common::eventually(a, "/readyz", |b| b == "ready").await,
        "ready"
    );
    let metrics = get(a, "/metrics").await.body;
    assert!(
        metrics.contains(r#"atelier_requests_total{route="related",status="200"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("atelier_cache_hits_total"), "{metrics}");
    server.stop().await.expect("graceful stop");
}

#[tokio::test]
async fn a_hit_serves_the_same_bytes_without_the_database() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let first = get(a, "/reviews?product_id=1&sort=newest").await.body;
    let misses = server.app.cache.stats().misses;
    let second = get(a, "/reviews?product_id=1&sort=newest&count=1&page=2")
        .await
        .body;
    assert_eq!(
        server.app.cache.stats().misses,
        misses,
        "another page of the same list is a hit"
    );
    assert!(first.ends_with(&format!("{}]}}", review_1())));
    assert_eq!(
        second,
        format!(
            r#"{{"product":"1","page":1,"count":1,"results":[{}]}}"#,
            review_1()
        )
    );

    // Drop the database out from under the server: hits still answer.
    let admin = db.client().await;
    admin
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(
        get(a, "/reviews?product_id=1&sort=newest").await.body,
        first
    );
}

#[tokio::test]
async fn an_operator_can_require_known_tokens() {
    let db = common::migrated_database().await;
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        auth_tokens: Some(atelier::config::Secret(
            ["test-token".to_owned()].into_iter().collect(),
        )),
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    let a = server.addr;
    assert_eq!(
        get(a, "/products/1/related").await.status,
        404,
        "the test client sends test-token"
    );
    let anonymous = common::send_raw(
        a,
        b"GET /products/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (401, "Unauthorized")
    );
    let stranger = common::send_raw(
        a,
        b"GET /products/1 HTTP/1.1\r\nHost: t\r\nAuthorization: nope\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(stranger.status, 401);
    let health = common::send_raw(
        a,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(health.status, 200, "operations endpoints stay open");
}

#[tokio::test]
async fn garbage_never_takes_the_server_down() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let long_path = format!(
        "GET /products/{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "9".repeat(5000)
    );
    let many_params = format!(
        "GET /reviews?{}product_id=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "a=1&".repeat(2000)
    );
    let requests: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /products HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /reviews HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{".to_vec(),
        b"POST /reviews HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec(),
        b"GET /reviews?product_id=%ff%fe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /qa/questions?product_id=1&page=%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        long_path.into_bytes(),
        many_params.into_bytes(),
        b"GET /products/1 HTTP/1.1\r\nHost: t\r\nNo colon here\r\nConnection: close\r\n\r\n".to_vec(),
        format!(
            "GET /products/1 HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(500_000)
        )
        .into_bytes(),
    ];
    for raw in &requests {
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(5), common::send_raw(a, raw)).await;
        if let Ok(r) = r {
            // 0: the server closed the connection on malformed HTTP, which is fine too.
            assert!(
                r.status < 500,
                "{} for {:?}",
                r.status,
                String::from_utf8_lossy(&raw[..raw.len().min(60)])
            );
        }
    }
    assert_eq!(
        get(a, "/products/1/related").await.body,
        "[2,3,5]",
        "still serving"
    );
}

#[tokio::test]
async fn a_body_in_a_transfer_coding_besides_chunked_is_refused_with_501_and_writes_nothing() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let client = db.client().await;
    let answers = common::count(&client, "answers").await;
    let json = r#"{"body":"Fits well","name":"tester","email":"t@example.com","photos":[]}"#;
    let post = |coding: &str| {
        format!(
            "POST /qa/questions/1/answers HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: {coding}\r\nConnection: close\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
            json.len()
        )
    };
    // The chunks carry plain JSON, which a server that ignored the gzip named first would
    // store.
    for coding in ["gzip, chunked", "identity,chunked", "x-custom , Chunked"] {
        let refused = common::send_raw(a, post(coding).as_bytes()).await;
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (501, "Not Implemented"),
            "{coding}"
        );
    }
    assert_eq!(common::count(&client, "answers").await, answers);
    // A PUT reads (and ignores) its body, so it is held to the same rule.
    let helpful = "SELECT helpfulness FROM answers WHERE id = 1";
    let votes: i32 = client.query_one(helpful, &[]).await.unwrap().get(0);
    let vote = "PUT /qa/answers/1/helpful HTTP/1.1\r\nHost: t\r\n\
                Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    let refused = common::send_raw(a, vote.as_bytes()).await;
    assert_eq!(refused.status, 501);
    let after: i32 = client.query_one(helpful, &[]).await.unwrap().get(0);
    assert_eq!(after, votes);
    let chunked = common::send_raw(a, post("Chunked").as_bytes()).await;
    assert_eq!((chunked.status, chunked.body.as_str()), (201, "Created"));
    assert_eq!(common::count(&client, "answers").await, answers + 1);
}

#[tokio::test]
async fn concurrent_misses_on_one_key_make_one_database_trip() {
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        precompute: atelier::config::Precompute::None,
        ..Default::default()
    };
    let (_db, server) = common::server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    let misses = server.app.cache.stats().misses;
    let requests: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(async move {
                get(
                    a,
                    &format!("/reviews?product_id=1&count=1&page={}", i % 3 + 1),
                )
                .await
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(
        server.app.cache.stats().misses,
        misses + 1,
        "one fill for 50 concurrent requests"
    );
}

/// A GET with `If-None-Match`, as a browser revalidating its cache sends it.
async fn conditional(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    tags: &str,
) -> common::Reply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: {tags}\r\nConnection: close\r\n\r\n"
    );
    common::send_raw(addr, raw.as_bytes()).await
}

#[tokio::test]
async fn conditional_requests_answer_304_while_the_body_is_unchanged() {
    let (_db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    let first = get(a, "/products/1").await;
    let tag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        tag.len() == 18 && tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"),
        "a strong tag: {tag}"
    );
    assert_eq!(
        get(a, "/products/1").await.header("etag"),
        Some(tag.as_str())
    );

    for listed in [
        tag.clone(),
        format!("\"0000000000000000\", W/{tag}"),
        "*".to_owned(),
    ] {
        let r = conditional(a, "GET", "/products/1", &listed).await;
        assert_eq!((r.status, r.body.as_str()), (304, ""), "{listed}");
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    assert_eq!(
        conditional(a, "HEAD", "/products/1", &tag).await.status,
        304
    );
    let other = conditional(a, "GET", "/products/1", "\"0000000000000000\"").await;
    assert_eq!((other.status, other.body), (200, first.body));
    let missing = conditional(a, "GET", "/products/999", "*").await;
    assert_eq!((missing.status, missing.header("etag")), (404, None));

    // Every page of a list has its own tag; a write changes the tags of what it changed.
    let page = |n: u32| format!("/reviews?product_id=2&count=1&page={n}");
    let one = get(a, &page(1)).await.header("etag").unwrap().to_owned();
    let two = get(a, &page(2)).await.header("etag").unwrap().to_owned();
    assert_ne!(one, two);
    assert_eq!(common::put(a, "/reviews/4/helpful").await.status, 204);
    let after = conditional(a, "GET", &page(1), &one).await;
    assert_eq!(after.status, 200, "the vote reordered the reviews");
    assert_ne!(after.header("etag"), Some(one.as_str()));
}
