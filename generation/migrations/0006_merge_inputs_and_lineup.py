"""Joins the image-input migration and today's lineup. Their order is not fixed by the graph, so the
input capabilities are seeded once more here: every generate_content model, including the ones
the lineup added, accepts reference images (setdefault: an operator's edit is kept)."""

import importlib

from django.db import migrations

files_inputs = importlib.import_module("generation.migrations.0005_files_inputs")


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0005_files_inputs"),
        ("generation", "0005_merge_batch_spelling_and_lineup"),
    ]

    operations = [
        migrations.RunPython(files_inputs.seed_input_capabilities, migrations.RunPython.noop),
    ]
