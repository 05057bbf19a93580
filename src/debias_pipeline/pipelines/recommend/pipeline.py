"""``recommend``: the top-N of a trained model for named users (no training)."""

from kedro.pipeline import Pipeline, node

from debias_pipeline.pipelines.recommend.nodes import recommend_for_users


def create_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(
                recommend_for_users,
                inputs=["trained_recommenders", "params:recommend", "params:dataset"],
                outputs="recommendations",
                name="recommend_for_users",
            )
        ]
    )
