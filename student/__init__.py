"""Shallow student policies (and optional student encoders) and their checkpoints."""

from crl_distill.student.model import (
    Student,
    StudentConfig,
    load_student,
    parse_students,
    save_student,
)

__all__ = ["Student", "StudentConfig", "load_student", "parse_students", "save_student"]
