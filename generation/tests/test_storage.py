import io

from PIL import Image as PILImage

from generation.engine.storage import image_dimensions, image_transcode, image_url, image_url_valid


def png(width=64, height=32) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_signed_url_round_trip_tamper_and_expiry(settings):
    settings.PUBLIC_BASE_URL = "https://api.example.com"
    url = image_url(public_id="img_abc", storage_path="images/o/j/img_abc.png", ttl_seconds=60, now=1000)
    assert url.startswith("https://api.example.com/files/img_abc.png?expires=1060&signature=")
    signature = url.rsplit("=", 1)[1]
    assert image_url_valid(public_id="img_abc", expires="1060", signature=signature, now=1001)
    assert not image_url_valid(public_id="img_abd", expires="1060", signature=signature, now=1001)
    assert not image_url_valid(public_id="img_abc", expires="1061", signature=signature, now=1001)
    assert not image_url_valid(public_id="img_abc", expires="1060", signature=signature, now=1061)
    assert not image_url_valid(public_id="img_abc", expires="soon", signature=signature, now=1001)


def test_transcode_and_dimensions():
    webp = image_transcode(png(), output_format="webp", quality=80)
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    jpeg = image_transcode(png(), output_format="jpeg", quality=70)
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert image_dimensions(jpeg) == (64, 32)
