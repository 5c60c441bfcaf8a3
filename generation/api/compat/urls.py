"""OpenAI- and Google-compatible routes, mounted at the site root (their paths are fixed by the SDKs)."""

from django.urls import path, re_path

from .google import GenerateContentView, PredictView
from .openai import ImageEditView, ImageGenerationView

_MODEL = r"(?P<model>[A-Za-z0-9._-]{1,100})"
# Vertex AI's full resource path, sent by google-genai with vertexai=True, project and location
# (our key then travels as the OAuth bearer token); project and location carry no meaning here.
_VERTEX = r"(?:projects/[^/]{1,100}/locations/[^/]{1,100}/)?publishers/google/models/"

urlpatterns = [
    path("v1/images/generations", ImageGenerationView.as_view(), name="compat-openai-images"),
    path("v1/images/edits", ImageEditView.as_view(), name="compat-openai-edits"),
    re_path(rf"^(?P<version>v1beta)/models/{_MODEL}:predict$", PredictView.as_view(), name="compat-predict"),
    re_path(
        rf"^(?P<version>v1|v1beta1)/{_VERTEX}{_MODEL}:predict$",
        PredictView.as_view(),
        name="compat-vertex-predict",
    ),
    re_path(
        rf"^(?P<version>v1|v1beta)/models/{_MODEL}:generateContent$",
        GenerateContentView.as_view(),
        name="compat-generate-content",
    ),
    re_path(
        rf"^(?P<version>v1|v1beta1)/{_VERTEX}{_MODEL}:generateContent$",
        GenerateContentView.as_view(),
        name="compat-vertex-generate-content",
    ),
]
