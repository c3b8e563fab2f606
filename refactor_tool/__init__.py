"""libcst codemod that converts legacy ``scripts/*.py`` jobs into registered DataForge tasks."""
