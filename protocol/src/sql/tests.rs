use super::*;

fn pg(sql: &str) -> Classified {
    classify(sql.as_bytes(), Dialect::Postgres, &WriteFunctions::none())
}

fn my(sql: &str) -> Classified {
    classify(sql.as_bytes(), Dialect::MySql, &WriteFunctions::none())
}

#[test]
fn smoke() {
    assert_eq!(pg("SELECT 1").route, Route::Replica);
}
