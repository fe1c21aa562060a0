"""Answers the real services gave, copied byte for byte from public recordings, for the fakes and tests.

The fakes in this package answer with these bodies (not with shapes written from memory), and
``tests/test_service_answers.py`` replays them through the project's clients. Each constant
names the repository, commit and path it was copied from. Where no recording exists, the
constant says so and what it is built from instead.
"""
from __future__ import annotations

# --------------------------------------------------------------------------- Deezer
# browniebroke/deezer-python @ f6672de2fdfdedbd649c99572cff70b14ce95f2b (VCR cassettes, requests to
# https://api.deezer.com). Deezer answers errors with HTTP 200 and the error inside the body.

#: tests/cassettes/TestClient.test_no_track_raise.yaml (GET /track/-1, HTTP 200): "no data".
DEEZER_NO_DATA = '{"error":{"type":"DataException","message":"no data","code":800}}'
#: tests/cassettes/TestClient.test_no_editorial_raise.yaml (GET /editorial/-1, HTTP 200).
DEEZER_WRONG_PARAMETER = '{"error":{"type":"ParameterException","message":"Wrong parameter","code":500}}'
#: tests/cassettes/TestClient.test_no_episode_raise.yaml (GET /episode/-1, HTTP 200): an error with no code.
DEEZER_NO_CODE = '{"error":{"type":"Exception","message":"An error has occured"}}'
#: tests/resources/cassettes/TestEpisode.test_add_bookmark.yaml (HTTP 200): ``error`` is an empty *list*
#: on success.
DEEZER_EMPTY_ERROR_LIST = '{"error":[],"results":true}'
#: tests/cassettes/TestClient.test_request_404.yaml (GET /does-not-exists): HTTP 404, ``error`` a string.
DEEZER_UNKNOWN_PATH = '{"error":"Not Found"}'
#: Not in the cassettes: Deezer's documented quota error (code 4, "QUOTA"), in the shape of the
#: recorded errors above; the same body is used by other public clients' tests.
DEEZER_QUOTA = '{"error":{"type":"Exception","message":"Quota limit exceeded","code":4}}'
#: Not in the cassettes: Deezer's documented "SERVICE_BUSY" error (code 700), in the recorded shape.
DEEZER_BUSY = '{"error":{"type":"Exception","message":"Service busy","code":700}}'

# --------------------------------------------------------------------------- iTunes
#: Apple's throttle (about 20 calls a minute): HTTP 403 with an empty body, not 429 (no recording
#: in the repositories above; the behaviour the project observed against the live API).
ITUNES_THROTTLED_STATUS, ITUNES_THROTTLED_BODY = 403, b""

# --------------------------------------------------------------------------- Spotify
# spotify-web-api-java/spotify-web-api-java @ d1ae46096458c91372a29d972f72cda8ef1a592d (src/test/fixtures).

#: src/test/fixtures/requests/authorization/auth-invalid-client.json (POST /api/token, bad secret).
SPOTIFY_INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client"}
#: src/test/fixtures/requests/authorization/client_credentials/ClientCredentials.json: the keys of a token.
SPOTIFY_TOKEN_KEYS = ("access_token", "token_type", "expires_in")
#: src/test/fixtures/requests/data/search/simplified/SearchArtistsRequest.json, the ``artists`` paging
#: object without its ``items``: ``next`` is offset + limit while that is below ``total``.
SPOTIFY_SEARCH_PAGE = {
    "href": "https://api.spotify.com/v1/search?query=Muse&type=artist&market=US&offset=5&limit=10",
    "limit": 10,
    "next": "https://api.spotify.com/v1/search?query=Muse&type=artist&market=US&offset=15&limit=10",
    "offset": 5,
    "previous": "https://api.spotify.com/v1/search?query=Muse&type=artist&market=US&offset=0&limit=10",
    "total": 171,
}
#: src/test/java/.../requests/data/playlists/GetPlaylistRequestTest.java stubs a 429 with
#: ``Retry-After: 4397`` (the service has sent 2,484 s and 12,471 s): the header is in seconds.
SPOTIFY_LONG_RETRY_AFTER_S = 4397

# sonallux/spotify-web-api @ a3369587d22fb1b3fe4aeb4022d67469365695b8, fixed-spotify-open-api.yml
# (Spotify's OpenAPI definition with the February 2026 changes):
#: components/schemas/ErrorObject: every error is ``{"error": {"status": <400-599>, "message": str}}``.
SPOTIFY_ERROR_KEYS = ("status", "message")
#: paths./search: ``limit`` 1-10 (default 5), ``offset`` at most 1000; /artists/{id}/albums ``limit``
#: 1-10 as well. A larger limit is answered 400 with this message (widely reported from the live API).
SPOTIFY_MAX_LIMIT, SPOTIFY_OFFSET_CAP = 10, 1000
SPOTIFY_INVALID_LIMIT = {"error": {"status": 400, "message": "Invalid limit"}}
#: No recording: the search's refusal of an offset at or past the cap, in the ErrorObject shape.
SPOTIFY_INVALID_OFFSET = {"error": {"status": 400, "message": "Invalid offset"}}
