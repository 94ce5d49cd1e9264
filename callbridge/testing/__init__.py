"""The test kit: what the test suite (``tests/``) and the benchmarks (``bench/``) both use
to exercise a real bridge -- servers as real processes (``nodes``), caller audio
(``audio``), Twilio at scale (``load``), abusive peers (``abusers``), fuzz targets
(``fuzz_targets``, needs hypothesis from the ``test`` extras), word errors (``wer``) and a
strict local fake of Twilio's REST API (``fake_twilio``).
Import the module you need; nothing here is used by the bridge itself."""
