"""Each server, used through its real client."""

import urllib.request


def test_postgres(postgres):
    import psycopg

    with psycopg.connect(**postgres) as conn:
        assert conn.execute("select 6 * 7").fetchone() == (42,)


def test_redis(redis_server):
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server)
    client.set("answer", 42)
    assert client.get("answer") == b"42"
    client.close()


def test_http_server(http_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_server}/") as response:
        assert response.status == 200
