"""Instructor tools: release the student notebooks and autograde submissions with nbgrader.

Run ``python -m autograder --help`` from the repository root.
"""
